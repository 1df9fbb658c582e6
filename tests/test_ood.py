""""Unlike the training data": the summary, the distance, the threshold and header checks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.benchmarks.ood.threshold import ct_like, heavy_bias
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis.ood import assess, combine_summaries, hellinger, summarize_prepared


def _summary(img: nib.Nifti1Image) -> dict:
    prepared = prepare_sources([img], SliceGeometry(16), Normalisation(), names=["T1w"])
    return summarize_prepared(prepared, ["T1w"])


@pytest.fixture(scope="module")
def reference(demo_cohort: Path) -> tuple[dict, Cohort]:
    """A T1w model's training summary: the demo cohort's training split."""
    cohort = Cohort.discover(demo_cohort)
    return combine_summaries([_summary(s.load("T1w")) for s in cohort.split("train")]), cohort


def test_held_out_t1w_passes_wrong_inputs_are_flagged(reference: tuple[dict, Cohort]) -> None:
    training, cohort = reference
    assert training["subjects"] == len(cohort.split("train"))
    for subject in cohort.split("validation") + cohort.split("test"):
        t1 = subject.load("T1w")
        verdict = assess(_summary(t1), training)
        assert not verdict.flagged, verdict.message
        assert verdict.message.startswith("like the training data")
        for label, img in {"T2w": subject.load("T2w"), "CT-like": ct_like(t1),
                           "bias": heavy_bias(t1)}.items():
            verdict = assess(_summary(img), training)
            assert verdict.flagged, label
            assert verdict.message.startswith("unlike the training data: T1w intensity "
                                              "distance"), label
            assert verdict.distances["T1w"] > verdict.threshold


def test_header_checks_voxel_size_and_brain_size(reference: tuple[dict, Cohort]) -> None:
    training, cohort = reference
    t1 = cohort.split("test")[0].load("T1w")
    data = np.asarray(t1.dataobj)
    tiny_voxels = nib.Nifti1Image(data, np.diag([0.1, 0.1, 0.1, 1.0]))  # a mouse-sized head
    verdict = assess(_summary(tiny_voxels), training)
    assert verdict.flagged and any("voxel size" in r for r in verdict.reasons)
    assert any(r.startswith("not brain-sized") for r in verdict.reasons)
    assert "T1w intensity" not in verdict.message  # same intensities: only the header is off


def test_no_summary_means_not_checked_and_old_metadata_loads() -> None:
    assert assess({"histograms": {"T1w": [1.0]}}, {}).checked is False
    meta = ModelMetadata(sources=["T1w"], target="T2w")
    data = meta.to_json().replace(', "training_summary": {}', "")
    assert "training_summary" not in data
    assert ModelMetadata.from_json(data).training_summary == {}


def test_hellinger_bounds() -> None:
    assert hellinger([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert hellinger([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
