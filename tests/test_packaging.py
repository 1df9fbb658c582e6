"""The package-dir mapping lists every subpackage, so a normal install is complete; a built
wheel carries the starter models with their manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import asdict
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


def _copy_tree(dest: Path) -> Path:
    """What a wheel is built from (pyproject, README, the package folders), without caches."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for folder in sorted({f.split("/")[0] for f in config["package-dir"].values()}):
        shutil.copytree(REPO / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    return dest


def test_wheel_ships_the_starter_models_with_matching_checksums(tmp_path: Path) -> None:
    """A stand-in added with `add_starter` (as the export side does) ends up in a built wheel,
    beside the manifest and its card, byte for byte as the manifest describes it."""
    from onnx_fixtures import channel_picker

    from mri2mri.runtime.models import MANIFEST, add_starter

    (tmp_path / "src").mkdir()
    source = _copy_tree(tmp_path / "src")
    entry = add_starter(channel_picker(tmp_path / "m.onnx", ["T1w"], "T2w"), "T1w-to-T2w",
                        "stand-in", "# card\n", folder=source / "runtime" / "models")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps",
                           "--no-build-isolation", "--no-cache-dir", "-q", "-w",
                           str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mri2mri-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        base = "mri2mri/runtime/models/"
        assert {f"{base}{n}" for n in (MANIFEST, "T1w-to-T2w.onnx", "T1w-to-T2w.md",
                                       "registry.py", "__init__.py")} <= names
        manifest = json.loads(archive.read(base + MANIFEST))
        # The stand-in replaced the packaged T1w-to-T2w; every other shipped model is there too.
        shipped = json.loads((source / "runtime" / "models" / MANIFEST).read_text())["models"]
        assert asdict(entry) in manifest["models"] and manifest["models"] == shipped
        for model in manifest["models"]:
            data = archive.read(base + model["file"])
            assert hashlib.sha256(data).hexdigest() == model["sha256"]
            assert len(data) == model["size"]
            assert base + model["card"] in names
