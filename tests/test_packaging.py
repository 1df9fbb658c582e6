"""The package-dir mapping lists every subpackage, so a normal install is complete."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def test_runtime_imports_without_torch():
    """Every module of the runtime (the base install) imports with torch blocked."""
    code = ("import sys, importlib, pkgutil; sys.modules['torch'] = None\n"
            "import mri2mri.runtime as r\n"
            "for m in pkgutil.walk_packages(r.__path__, 'mri2mri.runtime.'):\n"
            "    importlib.import_module(m.name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_console_script_has_help():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        done = subprocess.run([sys.executable, "-c", f"import {module} as m; m.{func}()",
                               "--help"], capture_output=True, text=True)
        assert done.returncode == 0, f"{name}: {done.stderr[-400:]}"
        assert "Usage" in done.stdout, name


def test_no_pytest_file_is_inside_an_installed_package():
    """Benchmark pytest files live in benchmarks/perf/ (no __init__.py): not in the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: REPO / folder for name, folder in config["package-dir"].items()}
    for package in config["packages"]:
        root = next(name for name in sorted(folders, key=len, reverse=True)
                    if package == name or package.startswith(name + "."))
        folder = folders[root].joinpath(*package[len(root):].split(".")[1:])
        found = sorted(p.name for p in folder.glob("*.py")
                       if p.name.startswith("test_") or p.name == "conftest.py")
        assert not found, f"{package} would install {found}"
    assert sorted(p.name for p in (REPO / "benchmarks" / "perf").glob("*.py")) == [
        "conftest.py", "test_end_to_end.py", "test_gate.py", "test_throughput.py"]
    assert not (REPO / "benchmarks" / "perf" / "__init__.py").exists()
