"""The deployable runtime needs neither torch, onnx nor matplotlib, nor training/export code.

Nor does cohort preparation (`mri2mri-data`) need torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nibabel as nib
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "runtime"
FORBIDDEN = ("torch", "onnx", "matplotlib", "mri2mri.train", "mri2mri.export",
             "mri2mri.benchmarks", "mri2mri.demo")
#: Blocks modules through sys.modules, as on an install without them.
BLOCK = "import sys\nfor name in {names!r}: sys.modules[name] = None\n"
LOADED = """
loaded = sorted(m for m in sys.modules if sys.modules[m] is not None
                and m.split(".")[0] in ("torch", "onnx", "matplotlib"))
print("LOADED", loaded)
"""

# Runs in a fresh interpreter where importing torch or onnx fails, as on a runtime-only install.
SCRIPT = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import mri2mri.runtime, mri2mri.runtime.synthesis.synthesizer, mri2mri.runtime.synthesis.cli_run
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.synthesis.cli_run import app
try:
    run_app(app, sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")
                or m.startswith(("mri2mri.train", "mri2mri.export", "mri2mri.benchmarks")))
print("LOADED", loaded)
"""


def test_synthesis_runs_with_torch_unimportable(tmp_path: Path) -> None:
    model = channel_picker(tmp_path / "m.onnx", ["T1w"], "T2w")
    nib.save(nifti(volume()), tmp_path / "t1.nii.gz")
    out = tmp_path / "t2.nii.gz"
    result = subprocess.run([sys.executable, "-c", SCRIPT, "--model", str(model), "--input",
                             f"T1w={tmp_path / 't1.nii.gz'}", "--output", str(out),
                             "--verbose"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    assert "provider" in result.stdout
    assert nib.load(out).shape == volume().shape


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # "from ..train import x" would leave the runtime package
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_no_runtime_module_imports_training_code() -> None:
    modules = sorted(RUNTIME.rglob("*.py"))
    assert len(modules) > 10 and any(p.parent.name == "registration" for p in modules)
    for path in modules:
        depth = len(path.relative_to(RUNTIME).parts) - 1  # 1 inside runtime/registration/
        for name in _imports(path):
            level = len(name) - len(name.lstrip("."))
            assert level <= depth + 1, f"{path.name} imports {name} from outside runtime"
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), \
                f"{path.name} imports {name}"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=300)


CROP = REPO / "tests" / "data" / "ixi-dti-crop"


def test_runtime_and_data_cli_without_torch_and_matplotlib(tmp_path: Path) -> None:
    """Every runtime module imports and mri2mri-data ixi --help works with neither; an
    import then stops before any work, in one line naming the extra to install."""
    script = BLOCK.format(names=["torch", "matplotlib"]) + """
import importlib, pkgutil
import mri2mri.runtime
for info in pkgutil.walk_packages(mri2mri.runtime.__path__, "mri2mri.runtime."):
    importlib.import_module(info.name)
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.data.cli import app
try:
    run_app(app, ["ixi", "--help"])
except SystemExit as exc:
    assert not exc.code, exc.code
try:
    run_app(app, ["ixi", "--dti", sys.argv[1], "--out", sys.argv[2]])
except SystemExit as exc:
    print("EXIT", exc.code)
""" + LOADED
    result = _run(script, str(CROP), str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout and "--dti" in result.stdout
    assert "EXIT 1" in result.stdout
    assert result.stderr.strip() == ("error: mri2mri-data ixi (its QC pictures) needs "
                                     "matplotlib, which is not installed: "
                                     "pip install 'mri2mri[data]'")
    assert not (tmp_path / "none").exists()


def test_ixi_import_runs_without_torch(tmp_path: Path) -> None:
    """A real DTI import (the shipped crop) with torch blocked."""
    script = BLOCK.format(names=["torch"]) + """
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.data.cli import app
try:
    run_app(app, sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
""" + LOADED
    out = tmp_path / "ixi"
    result = _run(script, "ixi", "--dti", str(CROP), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "LOADED ['matplotlib'" in result.stdout and "torch" not in result.stdout
    assert nib.load(out / "sub-IXI025" / "dwi" / "sub-IXI025_dwi.nii.gz").shape[3] == 16


def test_bids_app_with_reports_needs_no_torch_nor_matplotlib(tmp_path: Path) -> None:
    """The BIDS App, its out-of-distribution check and its QC reports (PNGs included)."""
    model = channel_picker(tmp_path / "m.onnx", ["T1w"], "T2w")
    (tmp_path / "bids" / "sub-01" / "anat").mkdir(parents=True)
    nib.save(nifti(volume()), tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    script = BLOCK.format(names=["torch", "onnx", "matplotlib"]) + """
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.synthesis.cli_run import app
try:
    run_app(app, sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
""" + LOADED
    result = _run(script, str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
                  "--model", str(model))
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout and "1 written, 0 failed" in result.stdout
    assert "data:image/png;base64," in (tmp_path / "out" / "sub-01.html").read_text()


def test_every_shipped_starter_model_synthesizes_by_name_with_torch_unimportable(
        tmp_path: Path) -> None:
    """The packaged models (no MRI2MRI_MODELS_DIR) run by name, offline, without torch."""
    import json
    import os

    manifest = json.loads((RUNTIME / "models" / "starters.json").read_text())
    names = [m["name"] for m in manifest["models"]]
    assert "T1w-to-T2w" in names  # the one the README promises
    env = {k: v for k, v in os.environ.items() if k != "MRI2MRI_MODELS_DIR"}
    for entry in manifest["models"]:
        source = entry["name"].split("-to-")[0]
        nib.save(nifti(volume((40, 44, 6))), tmp_path / "in.nii.gz")
        out = tmp_path / f"{entry['name']}.nii.gz"
        result = subprocess.run([sys.executable, "-c", SCRIPT, "--model", entry["name"],
                                 "--input", f"{source}={tmp_path / 'in.nii.gz'}",
                                 "--output", str(out)],
                                capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        assert "LOADED []" in result.stdout
        assert nib.load(out).shape == (40, 44, 6)
