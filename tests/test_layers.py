"""The shape of the tree: imports run one way, from the request path down to the store, never back.

Every module's imports are read from its source (lazy imports and ``TYPE_CHECKING`` ones too: a
type is a dependency as well), resolved to modules, and checked against ``LAYERS``: a module may
import its own subpackage and any lower layer, never a higher one, and no chain of imports may
lead back to where it started. A module that is in no layer fails too, so a new one gets a place.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.conftest import ROOT

# Lowest first. A name is a subpackage of inferwatch.middleware or one of its root modules.
LAYERS: Sequence[Sequence[str]] = (
    ("errors",),  # the one exception type
    ("settings",),  # the one settings object
    ("serving",),  # how the model serves: request figures, resources, cgroup
    ("payload",),  # what a capture holds and how its bodies read as features
    ("stats",),  # numerical methods and summary SQL: distances, the outlier model
    ("baseline",),  # the training data's profile, and a window counted in its bins
    ("summaries",),  # captured rows folded into per-minute rows, in the baseline's bins
    ("store",),  # the DuckDB log store, its writer thread (which folds summaries), columns
    ("evaluation",),  # ground truth joined with predictions, quality
    ("drift",),  # a window compared with the baseline, and the periodic check
    ("alerts",),  # rules on the reports, channels, delivery
    ("fleet",),  # summaries shipped to shared storage (its secrets read as the alerts' are)
    ("engine",),  # the parts put together, periodic jobs, Prometheus figures
    ("api",),  # the monitor API
    ("collector",),  # the process that owns the store, and the worker's hand-off to it
    ("capture",),  # the pure-ASGI middleware on the request path
    ("__init__",),  # inferwatch.middleware's public face
)
# Above all of inferwatch.middleware: the proxy and the command line, then the import name.
TOP = {"inferwatch.sidecar": 1, "inferwatch": 2}

SOURCES = {"inferwatch": ROOT / "inferwatch"} | {
    f"inferwatch.{name}": ROOT / name for name in ("middleware", "sidecar")
}


def modules(sources: Mapping[str, Path]) -> dict[str, Path]:
    """Every module under each package root, by dotted name (a package by its own name)."""
    found = {}
    for package, folder in sources.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in rel or any(p.startswith(".") for p in rel):
                continue
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join((package, *rel))] = path
    return found


def imports(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """The modules ``name`` imports, resolved (``from . import x`` names the module ``x``)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # the longest known prefix: ``import a.b.c`` imports a.b.c, or the package it is in
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                yield ".".join(parts)


def graph(sources: Mapping[str, Path]) -> dict[str, set[str]]:
    known = modules(sources)
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def rank(name: str, layers: Sequence[Sequence[str]], root: str) -> tuple[int, str] | None:
    """The layer of a module and the unit (subpackage or root module) it belongs to."""
    if name.startswith(root + ".") or name == root:
        unit = name[len(root) + 1 :].split(".")[0] if name != root else "__init__"
        for level, units in enumerate(layers):
            if unit in units:
                return level, unit
        return None
    for top, extra in TOP.items():
        if name == top or name.startswith(top + "."):
            return len(layers) + extra, top
    return None


def problems(sources: Mapping[str, Path], layers: Sequence[Sequence[str]], root: str) -> list[str]:
    """Each import circle, each upward import and each module in no layer, in words."""
    edges = graph(sources)
    found = [f"import circle: {' -> '.join(group)}" for group in cycles(edges)]
    for name in sorted(edges):
        if name.rpartition(".")[2] == "__main__":
            continue  # an entry point: run, never imported (checked below)
        mine = rank(name, layers, root)
        if mine is None:
            found.append(f"{name} is in no layer: give it a place in LAYERS")
            continue
        for target in sorted(edges[name]):
            theirs = rank(target, layers, root)
            if target.rpartition(".")[2] == "__main__":
                found.append(f"{name} imports the entry point {target}")
            elif theirs is not None and theirs[1] != mine[1] and theirs[0] >= mine[0]:
                found.append(f"upward import: {name} ({mine[1]}) imports {target} ({theirs[1]})")
    return found


def test_imports_run_one_way_with_no_circle() -> None:
    assert problems(SOURCES, LAYERS, "inferwatch.middleware") == []


def test_the_middleware_has_subpackages_of_one_concern_each() -> None:
    subpackages = {p.parent.name for p in (ROOT / "middleware").glob("*/__init__.py")}
    assert subpackages >= {"capture", "collector", "store", "baseline", "drift", "evaluation"}
    assert subpackages <= {unit for units in LAYERS for unit in units}
    # what is left at the top of middleware/: the public face and the base every part imports
    top = {p.stem for p in (ROOT / "middleware").glob("*.py")}
    assert top == {"__init__", "errors", "settings"}


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


SYNTHETIC_LAYERS = (("base",), ("low",), ("high",), ("__init__",))


def test_a_circle_fails_and_so_does_an_upward_import(tmp_path: Path) -> None:
    clean = {
        "pkg/__init__.py": "from .high.app import run\n",
        "pkg/base.py": "X = 1\n",
        "pkg/low/__init__.py": "",
        "pkg/low/store.py": "from ..base import X\n",
        "pkg/high/__init__.py": "",
        "pkg/high/app.py": "from ..low import store\nfrom ..low.store import X\n\ndef run(): ...\n",
    }
    sources = {"pkg": _tree(tmp_path / "clean", clean) / "pkg"}
    assert problems(sources, SYNTHETIC_LAYERS, "pkg") == []

    # the circle of the engine, its checks and its metrics, as it once was: lazily, in a function
    circle = clean | {
        "pkg/low/writer.py": "from .store import X\n",
        "pkg/low/store.py": "from ..base import X\n\ndef f():\n    from .reader import Y\n",
        "pkg/low/reader.py": "from .writer import X as Y\n",
    }
    sources = {"pkg": _tree(tmp_path / "circle", circle) / "pkg"}
    assert problems(sources, SYNTHETIC_LAYERS, "pkg") == [
        "import circle: pkg.low.reader -> pkg.low.store -> pkg.low.writer"
    ]

    # no circle, but a low module reaches up for a type
    upward = clean | {
        "pkg/low/cache.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.high.app import run\n"
    }
    sources = {"pkg": _tree(tmp_path / "upward", upward) / "pkg"}
    assert problems(sources, SYNTHETIC_LAYERS, "pkg") == [
        "upward import: pkg.low.cache (low) imports pkg.high.app (high)"
    ]

    # a module nobody gave a place
    stray = clean | {"pkg/extra/__init__.py": "", "pkg/extra/thing.py": "from ..base import X\n"}
    sources = {"pkg": _tree(tmp_path / "stray", stray) / "pkg"}
    assert problems(sources, SYNTHETIC_LAYERS, "pkg") == [
        "pkg.extra is in no layer: give it a place in LAYERS",
        "pkg.extra.thing is in no layer: give it a place in LAYERS",
    ]
