"""The runtime's import graph, read from the source (ast): shared by the layout and
import-circle tests."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE, FOLDER = "mri2mri.runtime", REPO / "runtime"


def runtime_modules() -> dict[str, Path]:
    """Every runtime module by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(FOLDER.rglob("*.py")):
        parts = path.relative_to(FOLDER).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Runtime modules that module `name` imports anywhere in its file, relative ones resolved.

    ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module, else
    ``pkg``. Parent packages are not counted: importing ``a.b.c`` runs ``a/b/__init__``, but
    a package's ``__init__`` importing its own submodule is not a circle of dependencies.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}
