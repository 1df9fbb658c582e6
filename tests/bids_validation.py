"""Run the official BIDS validator (``bids-validator-deno``, a dev dependency) on a folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def validator() -> str:
    """The validator's command: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("bids-validator-deno")
    found = str(beside) if beside.exists() else shutil.which("bids-validator-deno")
    assert found, "bids-validator-deno is not installed (pip install -e '.[dev]')"
    return found


def bids_errors(root: Path) -> list[str]:
    """Every error-level issue the official validator reports, as ``CODE location`` lines."""
    run = subprocess.run([validator(), str(root), "--format", "json", "--no-color"],
                         capture_output=True, text=True, timeout=120)
    try:
        issues = json.loads(run.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError):
        raise AssertionError(f"validator gave no JSON (exit {run.returncode}): "
                             f"{run.stderr[-2000:]}") from None
    return [f"{i['code']} {i.get('location', '')} {i.get('subCode') or ''}".strip()
            for i in issues if i.get("severity") == "error"]
