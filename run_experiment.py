"""Run one experiment: `python run_experiment.py --config configs/X.yaml [--out DIR]`.

A thin wrapper over `mlws experiment` (loadgen.cli), kept for the seed
README's entry point. Exit codes: 0 done, 2 bad config, 1 results not written.
"""

from __future__ import annotations

import argparse
import sys

from loadgen.cli import configure_experiment_parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the experiment; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="run_experiment.py",
        description="Run one experiment and write trace.csv, summary.json and plots.",
    )
    args = configure_experiment_parser(parser).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
