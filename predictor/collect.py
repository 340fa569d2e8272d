"""The seed's `collect_profiling_data(...)`, as a thin wrapper over `predictor.profiler`.

    from predictor.collect import collect_profiling_data
    from predictor.latency import LatencyPredictor

    collect_profiling_data(
        workloads={"resnet18": None, "resnet50": None, "vit": None},
        batch_sizes=[1, 8, 32, 128],
        backends=["pytorch"],
        precisions=["fp32"],
        output_path="results/seed_profiles.csv",
    )
    predictor = LatencyPredictor(model_type="random_forest")
    predictor.train("results/seed_profiles.csv")
    predictor.save("models/seed_predictor.mlws")

The seed passed workload *classes* as the mapping's values; here the models are
defined once in the workload catalogue (`mlws models`), so a key names a
catalogued workload and its value may be anything: None, the seed's class, a
catalogue `Workload`, or a path to an `.onnx` file, which is registered under
the key as a user workload. The CSV is exactly `mlws profile`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predictor.profile_rows import ProfileRow, ProfileSettings
from predictor.profiler import profile_to_csv

if TYPE_CHECKING:
    from workloads.registry import Workload

#: The seed's short names for catalogue workloads.
ALIASES: dict[str, str] = {"vit": "vit_b_16", "vit_b16": "vit_b_16"}


def _workloads(workloads: Mapping[str, Any] | Sequence[str]) -> list[Workload]:
    """Catalogue entries for the seed's mapping (a value ending in .onnx is the user's ONNX
    file of that name) or a plain list of names; unknown names fail naming the choices."""
    from workloads.registry import get_workload, onnx_file_workload

    entries: list[Workload] = []
    items = workloads.items() if isinstance(workloads, Mapping) else ((w, None) for w in workloads)
    for key, value in items:
        name = ALIASES.get(key, key)
        if isinstance(value, str | Path) and str(value).endswith(".onnx"):
            entries.append(onnx_file_workload(value, name=name))
        else:
            entries.append(get_workload(name))
    if not entries:
        raise ValueError("workloads is empty: name at least one workload to profile")
    return entries


def _check_choices(backends: Sequence[str], precisions: Sequence[str], device: str) -> None:
    """Fail on a bad backend, precision or device before any model is loaded or file written."""
    from backends.base import check_choice
    from backends.devices import resolve_device
    from backends.registry import backend_names, cuda_available

    for b in backends:
        check_choice("backend", b, backend_names())
        for p in precisions:
            resolve_device(device, p, cuda_available(b))


def collect_profiling_data(
    workloads: Mapping[str, Any] | Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 32),
    backends: Sequence[str] = ("pytorch",),
    precisions: Sequence[str] = ("fp32",),
    output_path: str | Path = "results/profiles.csv",
    *,
    threads: Sequence[int] | None = None,
    device: str = "auto",
    settings: ProfileSettings | None = None,
    onnx_dir: str | Path = "models/onnx",
    verbose: bool = True,
) -> list[ProfileRow]:
    """Profile every (workload, backend, precision, batch size, threads) and write the CSV.

    `threads` defaults to the CLI's (cores ÷ 2: two lanes); `settings` to
    `ProfileSettings()`. With `verbose` (the default) each load and each measured
    combination is reported on stderr: a progress bar on a terminal, one line per
    combination elsewhere. Returns the rows written to `output_path`.
    """
    entries = _workloads(workloads)
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be integers >= 1, got {list(batch_sizes)}")
    _check_choices(backends, precisions, device)
    return profile_to_csv(
        output_path,
        entries,
        list(backends),
        list(precisions),
        [int(b) for b in batch_sizes],
        list(threads or [max(1, (os.cpu_count() or 1) // 2)]),
        show_progress=verbose,
        device=device,
        settings=settings,
        onnx_dir=onnx_dir,
    )
