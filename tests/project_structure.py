"""The project's shape, read from its source with `ast`: imports, cycles, layers, sizes.

tests/test_structure.py holds the project to it.

Every import counts, wherever it is written: at the top of a module, inside a
function (a lazy import still ties the two modules together) and under
`if TYPE_CHECKING:` (a type is a dependency too). The packages are the ones
pyproject.toml installs, plus benchmarks/ and tests/.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

#: What the pure scheduling core may not use: anything that keeps time, waits, does I/O
#: or runs a model (time is an argument there). Nor any other package of the project:
#: they all sit above it.
SCHEDULING_FORBIDDEN_EXTERNAL = (
    "asyncio",
    "threading",
    "signal",
    "time",
    "datetime",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "socket",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "torch",
    "onnx",
    "onnxruntime",
)


@dataclass(frozen=True)
class Import:
    """One imported name as written, and the project module it resolves to (if any)."""

    module: str  # the importing module
    line: int
    name: str  # absolute dotted name as imported
    target: str | None  # the project module it loads, None for anything outside


@dataclass(frozen=True)
class Project:
    """Modules by dotted name, their files, and every import each one makes."""

    root: Path
    files: dict[str, Path]
    imports: dict[str, list[Import]]

    def __repr__(self) -> str:
        return f"Project({len(self.files)} modules under {self.root})"

    def edges(self) -> dict[str, dict[str, Import]]:
        """module → {imported project module: the first import of it}."""
        out: dict[str, dict[str, Import]] = {m: {} for m in self.files}
        for module, found in self.imports.items():
            for imp in found:
                if imp.target is not None and imp.target != module:
                    out[module].setdefault(imp.target, imp)
        return out

    def where(self, imp: Import) -> str:
        """`path:line` of an import, relative to the project root."""
        return f"{self.files[imp.module].relative_to(self.root)}:{imp.line}"


def project_roots(root: Path) -> list[Path]:
    """The installed packages and top-level modules (pyproject.toml), any other top-level
    package (a folder with an __init__.py), benchmarks/ and tests/."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = setuptools.get("packages", [])
    # Either a list of names or {"find": {"include": [patterns]}}.
    names = packages.get("find", {}).get("include", []) if isinstance(packages, dict) else packages
    tops = {p.split(".")[0].rstrip("*") for p in names}
    tops |= {p.parent.name for p in root.glob("*/__init__.py")}
    paths = [root / t for t in sorted(tops | {"benchmarks", "tests"}) if (root / t).is_dir()]
    return paths + [root / f"{m}.py" for m in setuptools.get("py-modules", [])]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(roots: Iterable[Path]) -> Iterator[Path]:
    for top in roots:
        if top.is_file():
            yield top
            continue
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*.py")):
            if not any(part.startswith(".") or part == "__pycache__" for part in path.parts):
                yield path


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The dotted module a `from ... import` names, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a project module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in files:
            return candidate
    return None


def imports_of(module: str, path: Path, files: dict[str, Path]) -> list[Import]:
    """Every import in the file, at any depth (functions, TYPE_CHECKING blocks)."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, node.lineno, alias.name, _resolve(alias.name, files)))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            for alias in node.names:
                # `from pkg import sub` loads the submodule pkg.sub when there is one.
                full = f"{base}.{alias.name}"
                name = full if full in files else base
                found.append(Import(module, node.lineno, name, _resolve(name, files)))
    return sorted(found, key=lambda i: i.line)


def load_project(root: Path, roots: Iterable[Path] | None = None) -> Project:
    paths = list(python_files(project_roots(root) if roots is None else roots))
    files = {module_name(root, p): p for p in paths}
    imports = {m: imports_of(m, p, files) for m, p in files.items()}
    return Project(root, files, imports)


# --------------------------------------------------------------------------- cycles
def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted (iterative: no recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def path_between(
    graph: dict[str, dict[str, Import]], start: str, goal: str, within: set[str] | None = None
) -> list[str] | None:
    """A shortest import chain start → ... → goal (breadth first), optionally inside `within`."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == goal:
                    chain = [goal, node]
                    while (back := previous[chain[-1]]) is not None:
                        chain.append(back)
                    return chain[::-1]
                if child not in previous and (within is None or child in within):
                    previous[child] = node
                    following.append(child)
        frontier = following
    return None


def describe_chain(project: Project, chain: list[str]) -> str:
    """`a -> b -> c`, then where each step's import is written."""
    graph = project.edges()
    steps = [
        f"    {project.where(graph[a][b])} imports {graph[a][b].name}" for a, b in pairwise(chain)
    ]
    return " -> ".join(chain) + "\n" + "\n".join(steps)


def import_cycles(project: Project) -> list[str]:
    """One message per tangle of modules that import each other: a shortest loop, and
    where the tangle has more modules than the loop, every import among them."""
    graph = project.edges()
    messages = []
    for component in sorted(strongly_connected(graph)):
        members = set(component)
        loop = path_between(graph, component[0], component[0], within=members)
        assert loop is not None
        message = f"import cycle among {', '.join(component)}:\n  " + describe_chain(project, loop)
        if len(loop) - 1 < len(component):
            inside = [
                f"    {project.where(imp)} {a} imports {b}"
                for a in component
                for b, imp in sorted(graph[a].items())
                if b in members
            ]
            message += "\n  every import among them:\n" + "\n".join(inside)
        messages.append(message)
    return messages


# --------------------------------------------------------------------------- layers
def reached_from(project: Project, package: str) -> dict[str, list[str]]:
    """Every project module that `package`'s modules import, directly or not, with one
    chain from a module of the package to it."""
    graph = project.edges()
    chains: dict[str, list[str]] = {}
    starts = [m for m in project.files if m == package or m.startswith(f"{package}.")]
    for start in sorted(starts):
        frontier = [[start]]
        seen = {start}
        while frontier:
            chain = frontier.pop(0)
            chains.setdefault(chain[-1], chain)
            for child in sorted(graph[chain[-1]]):
                if child not in seen:
                    seen.add(child)
                    frontier.append([*chain, child])
    return chains


def in_package(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def layer_violations(project: Project, package: str, forbidden: Iterable[str]) -> list[str]:
    """Each project module of `forbidden` that `package` reaches, with the chain."""
    forbidden = tuple(forbidden)
    return [
        f"{package}/ must not import {module}:\n  " + describe_chain(project, chain)
        for module, chain in sorted(reached_from(project, package).items())
        # Only where a chain first enters a forbidden package; not all it imports beyond.
        if in_package(module, forbidden) and not any(in_package(m, forbidden) for m in chain[:-1])
    ]


def scheduling_violations(project: Project) -> list[str]:
    """What keeps the scheduling core from being pure: another package of the project,
    or a module of SCHEDULING_FORBIDDEN_EXTERNAL, imported anywhere in it."""
    others = {m.split(".")[0] for m in project.files} - {"scheduling"}
    messages = layer_violations(project, "scheduling", sorted(others))
    for module in sorted(m for m in project.files if in_package(m, ["scheduling"])):
        messages += [
            f"scheduling/ must not use {imp.name} (a clock, I/O or a runtime): "
            f"{project.where(imp)} ({module}) imports it"
            for imp in project.imports[module]
            if imp.target is None and in_package(imp.name, SCHEDULING_FORBIDDEN_EXTERNAL)
        ]
    return messages


# --------------------------------------------------------------------------- sizes
def oversized(project: Project) -> list[str]:
    """Modules over MAX_MODULE_LINES; functions whose def line to last line is over
    MAX_FUNCTION_LINES (nested functions and methods included, decorators not)."""
    messages = []
    for module, path in sorted(project.files.items()):
        text = path.read_text()
        where = path.relative_to(project.root)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            messages.append(f"{where} ({module}): {lines} lines > {MAX_MODULE_LINES}")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    messages.append(
                        f"{where}:{node.lineno} {module}.{node.name}: "
                        f"{length} lines > {MAX_FUNCTION_LINES}"
                    )
    return messages


def report(title: str, messages: list[str]) -> str:
    """A failure message: how many, then each."""
    return f"{len(messages)} {title}:\n" + "\n".join(messages)
