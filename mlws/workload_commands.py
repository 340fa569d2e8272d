"""`mlws models`, `mlws export-onnx` and `mlws profile`: the catalogue, its exports, its timings."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

from backends.base import DEVICES, check_choice

if TYPE_CHECKING:
    from workloads.registry import Workload


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


def listed_workloads(onnx_files: list[str]) -> list[Workload]:
    """The built-in workloads, then one per user ONNX file (nothing is registered).

    Two different files that would share a name is a ValueError naming both.
    """
    from workloads.registry import get_workload, onnx_file_workload, workload_names

    listed = [get_workload(name) for name in workload_names()]
    seen: dict[str, Workload] = {}
    for path in onnx_files:
        workload = onnx_file_workload(path)
        earlier = seen.get(workload.name)
        if earlier is not None and earlier.onnx_file != workload.onnx_file:
            raise ValueError(
                f"workload name {workload.name!r} is given by both {earlier.onnx_file} and "
                f"{workload.onnx_file}; rename one of the files"
            )
        if earlier is None:
            seen[workload.name] = workload
            listed.append(workload)
    return listed


def _model_row(workload: Workload) -> dict[str, Any]:
    spec = workload.spec
    return {
        "name": workload.name,
        "param_count": spec.param_count,
        "input_shape": list(spec.input_shape),
        "input_dtype": spec.input_dtype,
        "output_shape": list(spec.output_shape),
        "token_base": spec.token_base,
        "tokens_per_sample": 4,
        "fp16_factor": 0.7,
        "flops_per_sample": spec.flops_per_sample,
    }


def cmd_models(args: argparse.Namespace) -> int:
    rows = [_model_row(w) for w in listed_workloads(args.onnx or [])]
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
    from backends.devices import resolve_device
    from backends.registry import backend_names, cuda_available
    from predictor.profiler import ProfileSettings, profile_to_csv
    from workloads.registry import get_workload

    workloads = list(args.workloads) + (["vit_b_16"] if args.vit else [])
    for w in workloads:
        get_workload(w)
    backends = args.backends or backend_names()
    for b in backends:
        check_choice("backend", b, backend_names())
        for p in args.precisions:
            # Fail before any model is loaded or any file written.
            resolve_device(args.device, p, cuda_available(b))
    settings = ProfileSettings(
        warmup=args.warmup,
        min_repeats=args.repeats,
        min_time_s=args.min_time,
        max_time_s=args.max_time,
    )
    rows = profile_to_csv(
        args.out,
        workloads,
        backends,
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
    p.add_argument(
        "--backends", type=csv_list, default=None, help="default: every registered backend"
    )
    p.add_argument("--precisions", type=csv_list, default=["fp32"])
    p.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument(
        "--threads",
        type=int_list,
        default=[default_threads()],
        help="intra-op thread counts to try (default: cores ÷ 2 lanes)",
    )
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="minimum measured runs")
    p.add_argument("--min-time", type=float, default=0.5, help="minimum seconds measured")
    p.add_argument("--max-time", type=float, default=6.0, help="cap on seconds measured")
    p.add_argument("--onnx-dir", default="models/onnx")
    p.add_argument("--out", default="results/profiles.csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_profile)


def add_workload_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `mlws models`, `mlws export-onnx` and `mlws profile`."""
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
