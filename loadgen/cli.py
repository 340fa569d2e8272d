"""`mlws experiment`, `mlws compare` and `mlws capacity`: argparse wiring and exit codes.

`mlws/cli.py` adds these subcommands with `add_experiment_parser`,
`add_compare_parser` and `add_capacity_parser`; `run_experiment.py` reuses the
experiment one. Each
handler returns an exit code: 0 done, 2 bad config or arguments (one line per
problem on stderr, no traceback), 1 the results could not be written.
Heavy imports (numpy, matplotlib, the simulator) happen inside the handlers,
so `mlws --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from loadgen.config import ConfigError
from scheduling.policies import POLICIES

DEFAULT_POLICIES = ",".join(POLICIES)
DEFAULT_LOADS = "0.3,0.5,0.7,0.9"

Handler = Callable[[argparse.Namespace], int]


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _report(exc: Exception) -> None:
    for line in str(exc).splitlines() or ["unknown error"]:
        print(f"error: {line}", file=sys.stderr)


def _guarded(body: Callable[[argparse.Namespace], None]) -> Handler:
    """Run `body`, mapping config problems to exit 2 and write failures to exit 1."""

    def handler(args: argparse.Namespace) -> int:
        try:
            body(args)
        except ConfigError as exc:
            _report(exc)
            return 2
        except OSError as exc:
            _report(OSError(f"cannot write results: {exc}"))
            return 1
        return 0

    return handler


def _load(args: argparse.Namespace) -> Any:
    from loadgen.config import load_experiment_config

    config = load_experiment_config(args.config)
    if args.seed is not None:
        config = config.model_copy(update={"seed": args.seed})
    return config


def _experiment(args: argparse.Namespace) -> None:
    from loadgen.experiment import run_experiment

    run_experiment(_load(args), out_root=args.out, url=args.url)


def _compare(args: argparse.Namespace) -> None:
    from loadgen.compare import default_out_dir, parse_loads, parse_policies, run_compare

    # Parse the lists first: a typo in --loads should not wait for the config check.
    policies, loads = parse_policies(args.schedulers), parse_loads(args.loads)
    config = _load(args)
    run_compare(config, policies, loads, args.out or default_out_dir(config))


def _capacity(args: argparse.Namespace) -> None:
    from loadgen.capacity import parse_request, run_capacity

    # Options first: a bad --target should not wait for the config to load.
    request = parse_request(args)
    run_capacity(_load(args), request)


experiment_command: Handler = _guarded(_experiment)
compare_command: Handler = _guarded(_compare)
capacity_command: Handler = _guarded(_capacity)


def configure_experiment_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the experiment options to `parser` and set `func`."""
    parser.add_argument("--config", required=True, metavar="FILE", help="experiment YAML")
    parser.add_argument(
        "--out", default="results", metavar="DIR", help="results root (default: results)"
    )
    parser.add_argument("--seed", type=_seed, metavar="N", help="override the config's seed")
    parser.add_argument(
        "--url", metavar="URL", help="mode live: load this running gateway instead of starting one"
    )
    parser.set_defaults(func=experiment_command)
    return parser


def add_experiment_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`experiment --config FILE [--out DIR] [--seed N]`: one run → results/<run_id>/."""
    parser = subparsers.add_parser(
        "experiment",
        help="run one experiment (simulated, or live against a gateway) and write trace, "
        "summary and plots",
        description="Run one experiment: writes trace.csv, summary.json, config.yaml and "
        "plots/ under DIR/<name>-<YYYYmmdd-HHMMSS>-<seed>/.",
    )
    return configure_experiment_parser(parser)


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`compare --config FILE [--schedulers a,b] [--loads x,y] [--out DIR] [--seed N]`."""
    parser = subparsers.add_parser(
        "compare",
        help="run several schedulers on the same traffic at several loads",
        description="For each load, draw one arrival trace (rate = load x capacity) and run "
        "every scheduler on it; writes compare.csv, compare.md and compare.png.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="base experiment YAML")
    parser.add_argument(
        "--schedulers",
        default=DEFAULT_POLICIES,
        metavar="LIST",
        help=f"comma-separated policies (default: {DEFAULT_POLICIES})",
    )
    parser.add_argument(
        "--loads",
        default=DEFAULT_LOADS,
        metavar="LIST",
        help=f"comma-separated loads, fractions of capacity (default: {DEFAULT_LOADS})",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default: results/compare-<name>-<time>)"
    )
    parser.add_argument("--seed", type=_seed, metavar="N", help="override the config's seed")
    parser.set_defaults(func=compare_command)
    return parser


def add_capacity_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`capacity --config FILE [--target P] [--url URL] …`: highest rate per class at target."""
    parser = subparsers.add_parser(
        "capacity",
        help="find each job class's highest arrival rate that still meets an SLO target",
        description="Keep the config's traffic mix, vary its Poisson arrival rate (bracketing, "
        "then bisection) and report per class the highest rate at which the fraction of its "
        "jobs ending ok within their SLO is at least --target. Simulated by default; --url "
        "probes a running gateway and simulates a twin beside it. Writes capacity.json, "
        "probes.csv and capacity.png; the last stdout line is JSON.",
    )
    add = parser.add_argument
    add("--config", required=True, metavar="FILE", help="experiment YAML: the traffic mix")
    add("--target", default=0.99, metavar="P", help="attainment target in (0, 1) (default 0.99)")
    add("--url", metavar="URL", help="probe this running gateway (live) instead of simulating")
    add("--seeds", default=1, metavar="N", help="seeds per probe, pooled (default 1)")
    add("--max-probes", default=14, metavar="N", help="new probes per class (default 14)")
    add("--tolerance", default=0.02, metavar="R", help="relative bracket width (default 0.02)")
    add("--min-load", default=0.02, metavar="X", help="lowest rate, x capacity (default 0.02)")
    add("--max-load", default=4.0, metavar="X", help="highest rate, x capacity (default 4)")
    add(
        "--duration-s",
        metavar="S",
        help="simulated seconds per probe (default: the config's duration_s, longer where "
        "needed for 2/(1-target) jobs of each class)",
    )
    add("--probe-s", default=10.0, metavar="S", help="live seconds per probe (default 10)")
    add("--max-time", default=300.0, metavar="S", help="wall-clock cap, s (default 300)")
    add("--seed", type=_seed, metavar="N", help="override the config's seed")
    add("--out", metavar="DIR", help="output directory (default: results/capacity-<name>-<time>)")
    parser.set_defaults(func=capacity_command)
    return parser
