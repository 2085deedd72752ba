"""The package's layers point one way: a module imports only from its own layer or below, and never in a cycle.

Every import counts, at the top of a file or inside a function (only ``if TYPE_CHECKING:`` blocks are exempt,
since they never run). The layers are written down in ``mnistlab/__init__.py``'s docstring and here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnistlab"

# Lower numbers are lower layers. A key names a module or a whole subpackage (longest match wins).
LAYERS: dict[str, int] = {
    "mnistlab.errors": 0,
    "mnistlab.fileio": 1,
    "mnistlab.faults": 1,
    "mnistlab.config": 1,
    "mnistlab.metrics": 1,
    "mnistlab.progress": 1,
    "mnistlab.tensors": 2,
    "mnistlab.models": 2,
    "mnistlab.lean": 2,
    "mnistlab.inference": 2,
    "mnistlab.augment": 2,
    "mnistlab.imaging": 2,
    "mnistlab.preprocess": 2,
    "mnistlab.photolike": 2,
    "mnistlab.devices": 1,
    "mnistlab.checkpoint": 3,
    "mnistlab.datasets": 3,
    "mnistlab.datasets.specs": 1,  # the data sets' facts (names, classes, digests): plain data
    "mnistlab.distributed": 3,
    "mnistlab.engine": 4,
    "mnistlab.callbacks": 4,
    "mnistlab.runs": 5,
    "mnistlab.runfolder": 5,
    "mnistlab.analysis": 5,
    "mnistlab.plots": 5,
    "mnistlab.report": 5,
    "mnistlab.predict": 5,
    "mnistlab.export": 5,
    "mnistlab.interop": 5,
    "mnistlab.cli": 6,
    "mnistlab.web": 6,
    "mnistlab.__main__": 6,
    "mnistlab": 6,  # the package facade: lazy names only
}
# Copied alone to machines without mnistlab: it may import nothing of the package.
STANDALONE = {"mnistlab.export.numpy_infer"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    best = None
    for key in LAYERS:
        if (module == key or module.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return None if best is None else LAYERS[best]


def _type_checking_blocks(tree: ast.AST, optional: bool) -> set[int]:
    """ids of nodes inside ``if TYPE_CHECKING:`` blocks (and, with ``optional``, ``try: ... except ImportError``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = []
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body = node.body
        elif optional and isinstance(node, ast.Try):
            if any(h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers):
                body = node.body
        for child in body:
            skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """``(imported mnistlab module, line)`` for every import in the file, at any depth."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_blocks(tree, optional=name in STANDALONE)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # ``from mnistlab import engine`` imports the submodule mnistlab.engine
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t == "mnistlab" or t.startswith("mnistlab.")]
    return found


def graph() -> tuple[dict[str, list[tuple[str, int]]], dict[str, Path]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports_of(p, set(files)) for m, p in files.items()}, files


def violations(edges: dict[str, list[tuple[str, int]]], files: dict[str, Path]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        ls = layer_of(src)
        if ls is None:
            bad.append(f"{files[src]}: module {src} has no layer (add it to LAYERS)")
            continue
        for dst, line in targets:
            if src in STANDALONE:
                bad.append(f"{files[src]}:{line}: {src} must stay standalone but imports {dst}")
                continue
            if dst == "mnistlab" and src != "mnistlab":
                continue  # ``from mnistlab import __version__``: the facade's constants
            ld = layer_of(dst)
            if ld is not None and ld > ls:
                bad.append(f"{files[src]}:{line}: {src} (layer {ls}) imports {dst} (layer {ld}): goes up")
    return bad


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _ in edges.get(v, []):
            if w not in edges or w == v or w == "mnistlab":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_imports_go_down_the_layers() -> None:
    edges, files = graph()
    assert violations(edges, files) == []


def test_no_import_cycles() -> None:
    edges, _ = graph()
    # A subpackage's __init__ re-exporting its own modules is not a cycle of concerns.
    found = [c for c in cycles(edges) if len({m.split(".")[1] for m in c}) > 1]
    assert found == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    edges, files = graph()
    planted = dict(edges)
    planted["mnistlab.models"] = [*edges["mnistlab.models"], ("mnistlab.engine", 1)]
    assert any("mnistlab.models (layer 2) imports mnistlab.engine (layer 4)" in v for v in violations(planted, files))
    planted = dict(edges)
    planted["mnistlab.metrics"] = [*edges["mnistlab.metrics"], ("mnistlab.progress", 1)]
    planted["mnistlab.progress"] = [*edges["mnistlab.progress"], ("mnistlab.metrics", 1)]
    assert any({"mnistlab.metrics", "mnistlab.progress"} <= set(c) for c in cycles(planted))


def test_layers_are_written_down() -> None:
    import mnistlab

    doc = mnistlab.__doc__ or ""
    for name in LAYERS:
        if name not in ("mnistlab", "mnistlab.__main__") and "." not in name.removeprefix("mnistlab."):
            assert name.removeprefix("mnistlab.") in doc, f"{name} is missing from the package docstring's layers"
