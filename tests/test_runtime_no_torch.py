"""The deployable runtime needs neither torch nor the onnx package, nor training/export code."""

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

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
FORBIDDEN = ("torch", "onnx", "mri2mri.train", "mri2mri.export", "mri2mri.benchmarks")

# Runs in a fresh interpreter where importing torch or onnx fails, as on a runtime-only install.
SCRIPT = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import mri2mri.runtime, mri2mri.runtime.synthesizer, mri2mri.runtime.cli_run
from mri2mri.runtime.cli_common import run_app
from mri2mri.runtime.cli_run import app
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
    modules = sorted(RUNTIME.glob("*.py"))
    assert len(modules) > 10
    for path in modules:
        for name in _imports(path):
            assert not name.startswith(".."), f"{path.name} imports {name} from outside runtime"
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), \
                f"{path.name} imports {name}"


def test_bids_app_with_reports_runs_with_torch_unimportable(tmp_path: Path) -> None:
    """The BIDS App, its out-of-distribution check and QC reports need no torch either."""
    model = channel_picker(tmp_path / "m.onnx", ["T1w"], "T2w")
    (tmp_path / "bids" / "sub-01" / "anat").mkdir(parents=True)
    nib.save(nifti(volume()), tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "bids"),
                             str(tmp_path / "out"), "participant", "--model", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout and "1 written, 0 failed" in result.stdout
    assert (tmp_path / "out" / "sub-01.html").is_file()
