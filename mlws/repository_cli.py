"""`mlws repository`: load and unload models on a running gateway, list them.

    mlws repository index [--ready]
    mlws repository load NAME [--config JSON]
    mlws repository unload NAME

Each is one call of the gateway's model repository routes (server/repository.py)
at `--url` (default http://127.0.0.1:8000). With access control on, the operator's
bearer token comes from the environment variable MLWS_TOKEN. A refusal prints the
gateway's reason on one line and exits 1; a gateway that cannot be reached too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
#: A load answers once every lane has loaded and warmed the model: allow for it.
TIMEOUT_S = 600.0


def cmd_repository(args: argparse.Namespace) -> int:
    """Run one repository call; 0 on success, 1 with the gateway's reason on failure."""
    import httpx

    base = args.url.rstrip("/") + "/v2/repository"
    token = os.environ.get("MLWS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if args.action == "index":
        path, body = "/index", {"ready": True} if args.ready else {}
    else:
        path, body = f"/models/{args.name}/{args.action}", _load_body(args)
    try:
        r = httpx.post(base + path, json=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"mlws repository: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"mlws repository: error: {r.status_code}: {_reason(r)}", file=sys.stderr)
        return 1
    if args.action == "index":
        for entry in r.json():
            reason = f"  ({entry['reason']})" if entry.get("reason") else ""
            print(f"{entry['name']:<24} {entry['state']:<12}{reason}")
    else:
        print(f"{args.action}ed {args.name}")
    return 0


def _load_body(args: argparse.Namespace) -> dict[str, Any]:
    config = getattr(args, "config", None)
    if config is None:
        return {}
    try:
        json.loads(config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not JSON: {exc}") from None
    return {"parameters": {"config": config}}


def _reason(response: Any) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or "no reason given"


def add_repository_parser(sub: argparse._SubParsersAction) -> None:
    """Add `mlws repository index|load|unload`."""
    p = sub.add_parser("repository", help="load and unload models on a running gateway")
    actions = p.add_subparsers(dest="action", required=True)
    index = actions.add_parser("index", help="list the models and their states")
    index.add_argument("--ready", action="store_true", help="only the models that serve")
    load = actions.add_parser("load", help="load (or replace) a model; waits until it serves")
    load.add_argument("name")
    load.add_argument(
        "--config",
        metavar="JSON",
        help='model config, e.g. \'{"onnx_file": "my.onnx"}\' (paths inside the model_dir)',
    )
    unload = actions.add_parser("unload", help="unload a model once its requests finished")
    unload.add_argument("name")
    for q in (index, load, unload):
        q.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
        q.set_defaults(func=cmd_repository)
