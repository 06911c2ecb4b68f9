"""Layering: losses and data never import the engine (the engine builds its hooks from them)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reid_ir"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_module_under_losses_or_data_imports_the_engine():
    files = [p for sub in ("losses", "data") for p in sorted((PACKAGE / sub).rglob("*.py"))]
    assert len(files) > 5  # the walk found the packages
    offenders = {
        str(p.relative_to(PACKAGE.parent)): sorted(
            n
            for n in _imported_modules(p)
            if n == "reid_ir.engine" or n.startswith("reid_ir.engine.")
        )
        for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_walk_sees_top_level_and_function_level_imports():
    top = _imported_modules(PACKAGE / "losses" / "clmle.py")
    assert "reid_ir.losses.clusters.ClusterBank" in top
    nested = _imported_modules(PACKAGE / "losses" / "registry.py")
    assert "reid_ir.losses.triplet" in nested  # imported inside a function
    engine = _imported_modules(PACKAGE / "engine" / "hooks" / "clusters.py")
    assert "reid_ir.losses.clusters" in engine and "reid_ir.engine.hooks.base" in engine
