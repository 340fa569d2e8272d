"""`mlws`: the command line. Each subcommand parses, validates, and delegates.

User mistakes (unknown names, bad values, missing files) print one line to
stderr and exit 2; nothing here shows a traceback for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from backends.base import check_choice


class UsageError(ValueError):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


def csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def int_list(value: str) -> list[int]:
    try:
        items = [int(v) for v in csv_list(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from exc
    if any(i < 1 for i in items):
        raise argparse.ArgumentTypeError(f"values must be ≥ 1, got {value!r}")
    return items


def default_threads() -> int:
    """Threads per lane by default: the cores shared by the default two lanes."""
    return max(1, (os.cpu_count() or 1) // 2)


# --- models -------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from workloads.registry import get_workload, workload_names

    if args.onnx:
        from workloads.registry import register_onnx_file

        for path in args.onnx:
            register_onnx_file(path)
    rows = []
    for name in workload_names():
        spec = get_workload(name).spec
        rows.append(
            {
                "name": name,
                "param_count": spec.param_count,
                "input_shape": list(spec.input_shape),
                "input_dtype": spec.input_dtype,
                "output_shape": list(spec.output_shape),
                "token_base": spec.token_base,
                "tokens_per_sample": 4,
                "fp16_factor": 0.7,
                "flops_per_sample": spec.flops_per_sample,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        print(
            f"{r['name']:<10} params {r['param_count']:>11,}  input {shape} {r['input_dtype']}"
            f"  output {r['output_shape'][0]}  tokens {r['token_base']} + 4/sample"
            f" (x0.7 at fp16)"
        )
    return 0


# --- export-onnx --------------------------------------------------------------------------


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """One path per workload on stdout; on stderr, what was done and the parity checked."""
    from backends.onnx_export import export_onnx_checked, will_reuse
    from predictor.progress import Progress
    from workloads.registry import get_workload

    workloads = [get_workload(name) for name in args.workloads]
    options = {"seed": args.seed, "weights": args.weights}
    with Progress(len(workloads), "export-onnx", unit="model") as progress:
        for w in workloads:
            if args.force or not will_reuse(w, args.out_dir, **options):
                progress.note(f"{w.name}: exporting to ONNX and checking it against PyTorch")
            started = time.monotonic()
            done = export_onnx_checked(w, args.out_dir, force=args.force, **options)
            spent = time.monotonic() - started
            what = "up to date, reused; at export" if done.reused else f"exported in {spent:.1f} s"
            checked = done.parity.describe() if done.parity else "no parity figures recorded"
            progress.update(detail=f"{w.name}: {what}: {checked}")
            print(done.path, flush=True)
    return 0


# --- profile ------------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> int:
    from backends.devices import resolve_device, torch_cuda_available
    from backends.registry import backend_names
    from predictor.profiler import ProfileSettings, profile_to_csv
    from workloads.registry import get_workload

    workloads = list(args.workloads) + (["vit_b_16"] if args.vit else [])
    for w in workloads:
        get_workload(w)
    for b in args.backends:
        check_choice("backend", b, backend_names())
    for p in args.precisions:
        # Fail before any model is loaded or any file written.
        resolve_device(args.device, p, torch_cuda_available())
    settings = ProfileSettings(
        warmup=args.warmup,
        min_repeats=args.repeats,
        min_time_s=args.min_time,
        max_time_s=args.max_time,
    )
    rows = profile_to_csv(
        args.out,
        workloads,
        args.backends,
        args.precisions,
        args.batch_sizes,
        args.threads,
        show_progress=not args.quiet,
        device=args.device,
        settings=settings,
        onnx_dir=args.onnx_dir,
    )
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure latency and memory per model/backend/batch")
    p.add_argument("--workloads", type=csv_list, default=["resnet18", "resnet50"])
    p.add_argument("--vit", action="store_true", help="also profile ViT-B/16 (slow on CPU)")
    p.add_argument("--backends", type=csv_list, default=["pytorch", "onnx"])
    p.add_argument("--precisions", type=csv_list, default=["fp32"])
    p.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument(
        "--threads",
        type=int_list,
        default=[default_threads()],
        help="intra-op thread counts to try (default: cores ÷ 2 lanes)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="minimum measured runs")
    p.add_argument("--min-time", type=float, default=0.5, help="minimum seconds measured")
    p.add_argument("--max-time", type=float, default=6.0, help="cap on seconds measured")
    p.add_argument("--onnx-dir", default="models/onnx")
    p.add_argument("--out", default="results/profiles.csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_profile)


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlws", description="ML Workload Scheduler: SLO-aware inference serving"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list workloads with parameters, input and token cost")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--onnx", action="append", metavar="FILE", help="also list a user ONNX file")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export-onnx", help="export workloads to ONNX (cached, parity-checked)")
    p.add_argument("--workloads", type=csv_list, default=["resnet18", "resnet50", "vit_b_16"])
    p.add_argument("--out-dir", default="models/onnx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="torchvision-compatible state_dict file")
    p.add_argument("--force", action="store_true", help="re-export even when up to date")
    p.set_defaults(func=cmd_export_onnx)

    add_profile_parser(sub)
    for add in _plugin_parsers():
        add(sub)
    return parser


def _plugin_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from loadgen.cli import add_capacity_parser, add_compare_parser, add_experiment_parser
    from loadgen.locust_report import add_locust_report_parser
    from predictor.cli import add_predictor_parser
    from server.serve import add_serve_parser

    return [
        add_experiment_parser,
        add_compare_parser,
        add_capacity_parser,
        add_serve_parser,
        add_predictor_parser,
        add_locust_report_parser,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, UsageError) as exc:
        print(f"mlws {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
