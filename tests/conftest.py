"""Shared fixtures: a tiny simulated cohort made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six simulated subjects at 3 mm (T1w, T2w, PDw, DWI): fast, but real anatomy."""
    from mri2mri.train.data.demo_cohort import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "demo", subjects=6, seed=0,
                           resolution=3.0, jobs=2)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared data folder beside the checkout (CI has a copy there too)."""
    import os

    path = Path(os.environ.get("MRI2MRI_SHARED", REPO.parent / "shared"))
    assert path.is_dir(), f"shared data folder not found at {path}"
    return path
