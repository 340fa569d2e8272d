"""`mlws`: the command line. Each subcommand parses, validates, and delegates.

User mistakes (unknown names, bad values, missing files) print one line to
stderr and exit 2; nothing here shows a traceback for them. Heavy imports
happen inside the handlers, so `mlws --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def build_parser() -> argparse.ArgumentParser:
    """The `mlws` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mlws", description="ML Workload Scheduler: SLO-aware inference serving"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _subcommand_parsers():
        add(sub)
    return parser


def _subcommand_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from loadgen.cli import add_capacity_parser, add_compare_parser, add_experiment_parser
    from loadgen.locust_report import add_locust_report_parser
    from mlws.config_cli import add_config_parser
    from mlws.repository_cli import add_repository_parser
    from mlws.serve import add_serve_parser
    from mlws.workload_commands import add_workload_parsers
    from predictor.cli import add_predictor_parser

    return [
        add_workload_parsers,
        add_experiment_parser,
        add_compare_parser,
        add_capacity_parser,
        add_serve_parser,
        add_repository_parser,
        add_config_parser,
        add_predictor_parser,
        add_locust_report_parser,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit code, or 2 with a one-line error for a user mistake."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"mlws {args.command}: error: {exc}", file=sys.stderr)
        return 2
