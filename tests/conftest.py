"""Shared fixtures: a tiny simulated cohort made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six simulated subjects at 3 mm (T1w, T2w, PDw, DWI): fast, but real anatomy."""
    from mri2mri.data.simulate.demo_cohort import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "demo", subjects=6, seed=0,
                           resolution=3.0, jobs=2)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The optional folder of full-size data (two IXI subjects' DTI), for a few slower tests.

    Found through ``MRI2MRI_SHARED`` or ``../shared`` beside the checkout. Without it
    those tests are skipped, saying why; every core path runs on data in the
    repository. A ``MRI2MRI_SHARED`` that does not exist is an error, not a skip.
    """
    env = os.environ.get("MRI2MRI_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    if env and not path.is_dir():
        pytest.fail(f"MRI2MRI_SHARED={env} is not a folder")
    if not path.is_dir():
        pytest.skip(f"full-size data not found (no MRI2MRI_SHARED and no {path}): "
                    "the same checks ran on the crop in tests/data")
    return path
