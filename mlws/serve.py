"""`mlws serve`: load the gateway config, refuse what could only fail later, and serve."""

from __future__ import annotations

import argparse
import logging


def cmd_serve(args: argparse.Namespace) -> int:
    """`mlws serve`: load the config (or the embedded default) and serve."""
    from server.config import ConfigFile, GatewayConfig, parse_gateway_config
    from server.serve import preflight, run_server

    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.grpc_port is not None:
        updates["grpc_port"] = None if args.grpc_port == "off" else int(args.grpc_port)
    # Remembered with its overrides: SIGHUP and POST /v1/config/reload read it again.
    config_file = ConfigFile(args.config, updates) if args.config else None
    if config_file is not None:
        config = config_file.read()
    elif updates:
        config = parse_gateway_config({**GatewayConfig().model_dump(), **updates}, "command line")
    else:
        config = GatewayConfig()
    preflight(config)
    # Our start-up phases at INFO; other libraries (the ONNX exporter is chatty) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mlws").setLevel(logging.INFO)
    return run_server(config, config_file)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `mlws serve [--config FILE] [--host H] [--port P] [--grpc-port P|off]`."""
    p = subparsers.add_parser("serve", help="run the inference gateway (HTTP API)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="gateway YAML (default: embedded default); SIGHUP applies its models again",
    )
    p.add_argument("--host", default=None, help="interface to listen on (overrides config)")
    p.add_argument("--port", type=int, default=None, help="TCP port (overrides config)")
    p.add_argument(
        "--grpc-port",
        default=None,
        type=_grpc_port,
        help="KServe v2 gRPC port, 0: a free one, off: no gRPC (overrides grpc_port)",
    )
    p.set_defaults(func=cmd_serve)


def _grpc_port(value: str) -> str:
    """--grpc-port: a port number or "off" (checked against the config's bounds later)."""
    if value != "off" and not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a port number or 'off', got {value!r}")
    return value
