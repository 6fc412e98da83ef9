"""The house: app/'s packages are layers, and imports only run down them (imports inside functions
included). core < data < model < evaluation, shipping < training < audit < bench < cli; evaluation and
shipping never import each other; nothing imports the CLI; no module is in an import circle.

`violations` is checked on app/ and, so that this test can fail, on a small planted package with
one upward import, one sideways import and one circle."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

LAYERS = {"core": 0, "data": 1, "model": 2, "evaluation": 3, "shipping": 3, "training": 4, "audit": 5, "bench": 6,
          "cli": 7, "__main__": 8}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of `root`'s package it imports, anywhere in its file."""
    mods = {module_name(root, p): p for p in root.rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else [])) if n.level \
                    else (n.module or "")
                for a in n.names:
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                    if target in mods and target != m:
                        graph[m].add(target)
            elif isinstance(n, ast.Import):
                graph[m].update(a.name for a in n.names if a.name in mods and a.name != m)
    return graph


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


def circles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(a, b, seen):
        return any(v == b or (v not in seen and reaches(v, b, seen | {v})) for v in graph.get(a, ()))
    return sorted(m for m in graph if reaches(m, m, {m}))


def violations(root: Path, layers: dict[str, int] = LAYERS) -> list[str]:
    graph, out = import_graph(root), []
    for m, targets in graph.items():
        for t in targets:
            a, b = layer(m), layer(t)
            if a is None or b is None or a == b:
                continue
            if b not in layers or a not in layers:
                out.append(f"{m} -> {t}: a package that is not a layer")
            elif layers[b] > layers[a]:
                out.append(f"{m} -> {t}: upward ({a} is below {b})")
            elif layers[b] == layers[a]:
                out.append(f"{m} -> {t}: sideways ({a} and {b} must not import each other)")
    out += [f"{m}: in an import circle" for m in circles(graph)]
    return out


def test_app_imports_run_one_way_with_no_circles():
    assert violations(ROOT / "app") == []
    packages = {p.name for p in (ROOT / "app").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == {k for k in LAYERS if k not in ("cli", "__main__")}, "every package is a layer"


def test_the_check_finds_an_upward_import_a_sideways_one_and_a_circle(tmp_path):
    pkg = tmp_path / "app"
    files = {
        "__init__.py": "",
        "core/__init__.py": "", "core/a.py": "def f():\n    from ..training import t  # upward, inside a function\n",
        "training/__init__.py": "", "training/t.py": "from ..core import a\n",
        "evaluation/__init__.py": "", "evaluation/e.py": "from ..shipping.s import g\n",
        "shipping/__init__.py": "", "shipping/s.py": "def g():\n    pass\n",
        "data/__init__.py": "", "data/x.py": "from . import y\n", "data/y.py": "from .x import z\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = violations(pkg)
    assert "app.core.a -> app.training.t: upward (core is below training)" in found
    assert any(v.startswith("app.evaluation.e -> app.shipping.s: sideways") for v in found)
    assert {"app.data.x: in an import circle", "app.data.y: in an import circle"} <= set(found)
    assert "app.core.a: in an import circle" in found  # core.a -> training.t -> core.a


def test_nothing_imports_the_cli():
    graph = import_graph(ROOT / "app")
    assert [m for m, ts in graph.items() if "app.cli" in ts] == ["app.__main__"]
