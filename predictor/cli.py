"""`mlws predictor train|eval`: fit the latency predictor on profiles and measure its error.

    mlws predictor train --profiles results/profiles.csv --out models/predictor.mlws \\
        [--model-type random_forest] [--train-batch-sizes 1,4,16,64] [--hold-out-workload resnet50]
    mlws predictor eval --model models/predictor.mlws --profiles results/profiles.csv \\
        [--test-batch-sizes 2,8,32] [--workloads resnet50] [--plot out.png]

`--profiles` takes several files, comma-separated or repeated, read as one
table: e.g. `configs/profiles/cpu.csv,results/live_profile.csv`, a profile
plus a running gateway's `GET /v1/profile` export.

`eval` prints MAPE and quantile coverage overall and per workload/backend and
ends with one JSON line. Mistakes (unknown option, bad value, missing file, a
predictor file that fails its checks) are one line on stderr and exit 2.
scikit-learn is imported inside the handlers, so `mlws --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from predictor.features import STATS

MODEL_TYPES = ("random_forest", "gradient_boosting")


def _names(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in _names(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {value!r}")
    return sizes


def _quantile(value: str) -> float:
    try:
        q = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0 < q < 1:
        raise argparse.ArgumentTypeError(f"a quantile lies strictly between 0 and 1, got {q}")
    return q


def _quantiles(value: str) -> list[float]:
    return [_quantile(v) for v in _names(value)]


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` report every mistake, unknown options included, in one line (exit 2).

    argparse prints the usage before the error and leaves unknown options to
    the top-level parser; both are rerouted here so a script sees one line.
    """

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    original = parser.parse_known_args

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = original(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    """Train on the selected rows of the profile CSVs and save the predictor."""
    from predictor.evaluate import select_rows
    from predictor.features import load_profile_data
    from predictor.latency import LatencyPredictor

    data = load_profile_data(args.profiles)
    rows = select_rows(
        data,
        batch_sizes=args.train_batch_sizes,
        exclude_workloads=args.hold_out_workload,
        what="training selection",
    )
    predictor = LatencyPredictor(
        args.model_type, quantiles=tuple(args.quantiles), stat=args.stat, seed=args.seed
    ).train(rows)
    info = predictor.info
    margins = ", ".join(f"q{q:g} ×{predictor.quantile_margin(q):.3f}" for q in predictor.quantiles)
    print(
        f"trained {predictor.model_type} on {info['rows']} rows "
        f"({', '.join(info['workloads'])}; {', '.join(info['backends'])}; batch sizes "
        f"{', '.join(map(str, info['batch_sizes']))}) in {info['train_s']:.2f} s; "
        f"calibrated margin {margins}"
    )
    try:
        path = predictor.save(args.out)
    except OSError as exc:
        print(f"mlws predictor train: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Print the saved predictor's error on the selected rows, then one JSON line."""
    from predictor.evaluate import evaluate_predictor, format_report, plot_predictions, select_rows
    from predictor.features import load_profile_data
    from predictor.latency import LatencyPredictor

    predictor = LatencyPredictor.load(args.model)
    data = load_profile_data(args.profiles, sizes=predictor.sizes)
    rows = select_rows(
        data, batch_sizes=args.test_batch_sizes, workloads=args.workloads, what="test selection"
    )
    result = evaluate_predictor(predictor, rows, args.quantile)
    print(format_report(result))
    if args.plot:
        try:
            print(f"plot: {plot_predictions(predictor, rows, args.plot, args.quantile)}")
        except OSError as exc:
            print(f"mlws predictor eval: error: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, sort_keys=False))
    return 0


#: `--profiles` of train and eval: several files (comma-separated or repeated) are
#: read one after another, e.g. configs/profiles/cpu.csv plus a GET /v1/profile export.
PROFILES_OPTION: dict[str, Any] = {
    "required": True,
    "type": _names,
    "action": "extend",
    "metavar": "CSV[,CSV…]",
    "help": "`mlws profile` output or a gateway's GET /v1/profile export; several files "
    "(comma-separated or repeated) are concatenated",
}


def add_predictor_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`predictor train|eval`: the learned latency predictor (see this module's docstring)."""
    parser = subparsers.add_parser(
        "predictor",
        help="train and evaluate the learned latency predictor",
        description="Train the latency predictor on `mlws profile` CSVs and measure its error.",
    )
    _one_line_errors(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="{train,eval}")

    t = _one_line_errors(
        actions.add_parser("train", help="fit on a profile CSV and save the predictor")
    )
    t.add_argument("--profiles", **PROFILES_OPTION)
    t.add_argument("--out", default="models/predictor.mlws", metavar="FILE")
    t.add_argument("--model-type", default="random_forest", choices=MODEL_TYPES)
    t.add_argument(
        "--train-batch-sizes", type=_batch_sizes, metavar="LIST", help="train on these rows only"
    )
    t.add_argument(
        "--hold-out-workload",
        type=_names,
        metavar="LIST",
        help="leave these workloads out of training (to test prediction from size)",
    )
    t.add_argument("--stat", default="mean_ms", choices=STATS, help="latency statistic to learn")
    t.add_argument(
        "--quantiles", type=_quantiles, default=[0.95], metavar="LIST", help="default 0.95"
    )
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = _one_line_errors(
        actions.add_parser("eval", help="MAPE and quantile coverage on a profile CSV")
    )
    e.add_argument("--model", required=True, metavar="FILE", help="a trained predictor file")
    e.add_argument("--profiles", **PROFILES_OPTION)
    e.add_argument("--test-batch-sizes", type=_batch_sizes, metavar="LIST")
    e.add_argument(
        "--workloads",
        "--hold-out-workload",
        dest="workloads",
        type=_names,
        metavar="LIST",
        help="evaluate these only (e.g. the workloads held out of training)",
    )
    e.add_argument("--quantile", type=_quantile, default=0.95, help="default 0.95")
    e.add_argument("--plot", metavar="PNG", help="write predicted vs measured (log-log)")
    e.set_defaults(func=cmd_eval)
    return parser
