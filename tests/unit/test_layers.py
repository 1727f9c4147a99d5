"""The house rules of the package map: layer order, no cycles, adapters use public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("dags", "components", "pipelines", "scripts", "bench")


def test_import_linter_contracts_are_kept() -> None:
    """``lint-imports`` (the layer contract in pyproject.toml) passes."""
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(linter)], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _driftline_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from driftline... import name`` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("driftline"):
            found += [(node.module or "", alias.name) for alias in node.names]
    return found


def test_adapters_import_only_public_driftline_names() -> None:
    """DAGs, components, pipelines, scripts and benchmarks use no private driftline name."""
    private = [
        f"{path.relative_to(ROOT)}: {module}.{name}"
        for folder in ADAPTERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module, name in _driftline_imports(path)
        if name.startswith("_") or any(part.startswith("_") for part in module.split("."))
    ]
    assert not private, private
