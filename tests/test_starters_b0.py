"""The b=0 starter models (T1w-to-b0, b0-to-T1w): simulated heads with an undistorted,
fat-suppressed spin-echo b=0, built by one command and scored on the T1w's grid."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.starters import recipes
from mri2mri.starters.build import build_starter
from mri2mri.starters.card import real_words
from mri2mri.starters.recipes import ANATOMICAL, RECIPES


def test_b0_recipes_simulate_heads_with_an_undistorted_b0() -> None:
    for name, sources, target in (("T1w-to-b0", ("T1w",), "b0"),
                                  ("b0-to-T1w", ("b0",), "T1w")):
        r = RECIPES[name]
        assert (r.sources, r.target, r.variety, r.train) == (sources, target, "starter",
                                                             ANATOMICAL)
        assert r.head and not r.dwi_distortion and r.has_b0
        assert r.images() == ("T1w", "dwi")
        assert r.to_dict()["head"] is True and r.to_dict()["dwi_distortion"] is False
    assert "mri2mri-register --correct-distortion" in RECIPES["T1w-to-b0"].summary
    for name in ("T1w-to-T2w", "T2w-to-T1w", "T1w-to-PDw"):
        assert not RECIPES[name].head and not RECIPES[name].has_b0


@pytest.mark.slow
def test_a_tiny_b0_recipe_builds_and_scores_on_the_t1w_grid(
        tmp_path: Path, demo_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = replace(RECIPES["T1w-to-b0"], subjects=5, resolution=6.0, seed=1,
                   train={"epochs": 1, "slices_per_epoch": 16, "batch_size": 4,
                          "simulated_subjects": 0, "threads": 1, "workers": 0})
    monkeypatch.setitem(recipes.RECIPES, "T1w-to-b0", tiny)
    # --real is used as it is: any folder whose subjects have a T1w and a DWI.
    build = build_starter("T1w-to-b0", tmp_path / "build", real=demo_cohort, jobs=1)
    assert build.model.is_file() and build.installed is None
    recorded = json.loads((build.out / "build.json").read_text())["recipe"]
    assert recorded["head"] is True and recorded["dwi_distortion"] is False
    # The cohort: heads, the undistorted b=0 (no read-out time), only T1w and DWI.
    data = build.out / "data"
    simulation = json.loads((data / "dataset_description.json").read_text())[
        "SimulationParameters"]
    assert "head" in simulation and simulation["epi_peak_displacement_mm"] == [0.0, 0.0]
    sidecar = json.loads((data / "sub-001" / "dwi" / "sub-001_dwi.json").read_text())
    assert "TotalReadoutTime" not in sidecar
    assert sorted(p.name for p in (data / "sub-001" / "anat").glob("*.nii.gz")) == [
        "sub-001_T1w.nii.gz"]
    # Scored on the T1w's grid: the region is at most the T1w's volume, in ml.
    t1 = nib.load(data / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    anat_ml = np.prod(t1.shape) * np.prod(t1.header.get_zooms()) / 1000.0
    for summary in (build.simulated, build.real):
        assert (summary["source"], summary["target"]) == ("T1w", "b0")
        for entry in summary["subjects"].values():
            assert 0 < entry["region_ml"]["brain"] <= anat_ml * 3  # the real cohort: 3 mm
            assert np.isfinite(entry["scores"]["model"]["brain"]["level_free_psnr"])
    assert set(build.real["subjects"]) == {p.name for p in demo_cohort.glob("sub-*")}
    card = build.card.read_text()
    for words in ("simulated only", "head (CSF, skull", "undistorted", "fat-suppressed",
                  "--no-distortion", "the T1w's grid", "mri2mri-starter build T1w-to-b0",
                  "Zero-shot on real scans", "Real pairs it never saw"):
        assert words in card, words


def test_the_card_says_when_the_real_folder_is_a_pseudo_dwi_and_how_it_was_made(
        tmp_path: Path) -> None:
    b0 = RECIPES["T1w-to-b0"]
    for readout, words in ((0.0, "undistorted (`--no-distortion`)"),
                           (0.05, "with an EPI distortion that the model's b=0 does not have")):
        folder = tmp_path / f"pseudo-{readout}"
        folder.mkdir()
        (folder / "dataset_description.json").write_text(json.dumps(
            {"Name": "mri2mri pseudo-DWI cohort",
             "SimulationParameters": {"epi": {"total_readout_time": readout}}}))
        summary = {"dataset": "mri2mri pseudo-DWI cohort", "real": str(folder)}
        said = real_words(b0, summary)
        assert "a b=0 simulated from its real T2w" in said and words in said
        assert real_words(RECIPES["T1w-to-T2w"], summary).startswith("Real pairs")
    other = {"dataset": "my-dwi-study", "real": str(tmp_path)}
    assert real_words(b0, other) == "Real pairs it never saw (`my-dwi-study`): "
