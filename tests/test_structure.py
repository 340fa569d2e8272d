"""The project's imports and sizes, read with `ast` (tests/project_structure.py).

No import cycles between modules (lazy and TYPE_CHECKING imports count);
`server/` never reaches `loadgen/`; nothing but the tests imports the command
line; the scheduling core stays pure; modules ≤ 500 lines, functions ≤ 60.
The first tests check the checker on a small made-up tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.project_structure import (
    REPO,
    Project,
    import_cycles,
    layer_violations,
    load_project,
    oversized,
    report,
    scheduling_violations,
)


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(REPO)


def make_tree(root: Path, files: dict[str, str]) -> Project:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_project(root, roots=sorted(d for d in root.iterdir() if d.is_dir()))


# --------------------------------------------------------------- the checker itself
def test_lazy_and_type_checking_imports_make_a_cycle(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path,
        {
            "a/__init__.py": "",
            "a/app.py": "from a.infer import run\n",
            "a/infer.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from a.app import Gateway\n"
            ),
            "a/lanes.py": "def pool():\n    from .lanes_thread import T\n",
            "a/lanes_thread.py": "from a import lanes\n",
            "b/__init__.py": "",
            "b/ok.py": "import a.app\nfrom a import infer\n",
        },
    )
    cycles = import_cycles(tree)
    assert len(cycles) == 2
    assert "a.app -> a.infer -> a.app" in cycles[0]
    assert "a/infer.py:3 imports a.app" in cycles[0]
    assert "a.lanes -> a.lanes_thread -> a.lanes" in cycles[1]
    assert "a/lanes.py:2 imports a.lanes_thread" in cycles[1]  # the relative import resolved


def test_a_longer_cycle_is_reported_whole(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path,
        {
            "a/x.py": "import a.y\n",
            "a/y.py": "from a.z import f\n",
            "a/z.py": "def f():\n    import a.x\n",
        },
    )
    [cycle] = import_cycles(tree)
    assert "a.x -> a.y -> a.z -> a.x" in cycle


def test_layers_are_checked_through_other_modules(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path,
        {
            "a/core.py": "from b.helper import h\n",
            "b/helper.py": "def h():\n    from b.top import t\n",
            "b/top.py": "import time\n",
        },
    )
    [message] = layer_violations(tree, "a", ["b.top"])
    assert "a/ must not import b.top" in message
    assert "a.core -> b.helper -> b.top" in message
    assert "b/helper.py:2 imports b.top" in message


def test_the_core_may_not_keep_time_or_import_the_layers_above(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path,
        {
            "scheduling/core.py": "from b.top import t\ndef f():\n    import time\n",
            "scheduling/fine.py": "import heapq\nfrom scheduling.core import f\n",
            "b/top.py": "t = 1\n",
        },
    )
    found = scheduling_violations(tree)
    assert len(found) == 2
    assert "scheduling/ must not import b.top" in found[0]
    assert "scheduling/core.py:3 (scheduling.core) imports it" in found[1]
    assert "must not use time" in found[1]


def test_sizes_count_def_line_to_last_line(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    tree = make_tree(
        tmp_path,
        {
            "a/fits.py": "@staticmethod\ndef f():\n" + body,  # 60 lines
            "a/long.py": "def g():\n" + body + "    return 0\n",  # 61 lines
        },
    )
    assert oversized(tree) == ["a/long.py:1 a.long.g: 61 lines > 60"]


# --------------------------------------------------------------- the project
def test_the_walk_sees_every_package(project: Project) -> None:
    tops = {m.split(".")[0] for m in project.files}
    expected = {"mlws", "server", "scheduling", "backends", "workloads", "predictor", "loadgen"}
    assert expected <= tops
    assert "server.app" in project.files and "scheduling.scheduler" in project.files


def test_no_import_cycles(project: Project) -> None:
    cycles = import_cycles(project)
    assert not cycles, report("import cycles", cycles)


def test_server_does_not_import_the_load_generator(project: Project) -> None:
    found = layer_violations(project, "server", ["loadgen"])
    assert not found, report("imports of loadgen/ from server/", found)


def test_only_the_tests_import_the_command_line(project: Project) -> None:
    packages = sorted({m.split(".")[0] for m in project.files} - {"mlws", "tests"})
    found = [v for package in packages for v in layer_violations(project, package, ["mlws"])]
    assert not found, report("imports of the command line (mlws/)", found)


def test_scheduling_stays_pure(project: Project) -> None:
    found = scheduling_violations(project)
    assert not found, report("imports that make scheduling/ impure", found)


def test_modules_and_functions_stay_small(project: Project) -> None:
    found = oversized(project)
    assert not found, report("modules or functions over the size limits", found)
