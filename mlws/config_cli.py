"""`mlws config reload`: make a running gateway apply its config file's models again.

    mlws config reload [--url URL]

One call of POST /v1/config/reload at `--url` (default http://127.0.0.1:8000), as
SIGHUP does but with the answer: what was added, removed, replaced, left unchanged,
and why a change failed. With access control on, the operator's bearer token comes
from the environment variable MLWS_TOKEN. Exit 0 when every change applied; 1 with
the gateway's reason (and the report, when the reload ran) otherwise, or when the
gateway cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mlws.repository_cli import DEFAULT_URL, TIMEOUT_S


def cmd_config_reload(args: argparse.Namespace) -> int:
    """POST /v1/config/reload; print the report."""
    import httpx

    token = os.environ.get("MLWS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = args.url.rstrip("/") + "/v1/config/reload"
    try:
        r = httpx.post(url, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"mlws config: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    body = _json(r)
    report = body.get("report") if r.status_code != 200 else body
    if isinstance(report, dict):
        _print_report(report)
    if r.status_code != 200:
        reason = body.get("detail") or r.text.strip() or "no reason given"
        print(f"mlws config: error: {r.status_code}: {reason}", file=sys.stderr)
        return 1
    return 0


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _print_report(report: dict[str, Any]) -> None:
    for what in ("added", "removed", "replaced", "unchanged"):
        for name in report.get(what, []):
            print(f"{name:<24} {what}")
    for name, why in report.get("failed", {}).items():
        print(f"{name:<24} FAILED  {why}")


def add_config_parser(sub: argparse._SubParsersAction) -> None:
    """Add `mlws config reload`."""
    p = sub.add_parser("config", help="a running gateway's config")
    actions = p.add_subparsers(dest="action", required=True)
    reload = actions.add_parser(
        "reload", help="apply the config file's models without a restart (as SIGHUP)"
    )
    reload.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    reload.set_defaults(func=cmd_config_reload)
