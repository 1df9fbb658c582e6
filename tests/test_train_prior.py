"""The simulated prior: simulated subjects trained on beside the cohort's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nilearn")

from test_train_cohort import (  # noqa: E402
    TINY,
    assert_resume_matches,
    assert_run_matches_pytorch,
    tiny_cohort_dir,
)

from mri2mri.data.cohort import Cohort  # noqa: E402
from mri2mri.runtime.core.errors import InputError  # noqa: E402
from mri2mri.train import prior  # noqa: E402

_RUNS: dict[str, object] = {}


def _config(tmp_path_factory, name: str, **changes) -> dict:
    """TINY with one simulated subject, the prior's cohort shared through one cache."""
    if "cache" not in _RUNS:
        _RUNS["cache"] = tmp_path_factory.mktemp("prior_cache")
    return {"data": str(tiny_cohort_dir(tmp_path_factory)), "sources": ["T1w"],
            "target": "T2w", "out": str(tmp_path_factory.mktemp(name) / "run"),
            "cache": str(_RUNS["cache"]), **TINY, "simulated_subjects": 1, **changes}


def _prior_run(tmp_path_factory):
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    if "run" not in _RUNS:
        _RUNS["run"] = train(TrainConfig(**_config(tmp_path_factory, "prior")))
    return _RUNS["run"]


def test_the_default_recipe_trains_with_the_prior():
    from mri2mri.train.augment import AugmentSpec
    from mri2mri.train.config import TrainConfig

    config = TrainConfig(data="d", sources=["T1w"], target="T2w", out="o")
    assert config.simulated_subjects > 0
    assert config.simulated_augment == AugmentSpec.parse("strong,randomize=0.7").to_string()
    with pytest.raises(ValueError, match="simulated_subjects"):
        TrainConfig(data="d", sources=["T1w"], target="T2w", out="o", simulated_subjects=-1)
    with pytest.raises(ValueError):
        TrainConfig(data="d", sources=["T1w"], target="T2w", out="o",
                    simulated_augment="strong,nonsense=1")


def test_the_simulator_images_the_anatomical_contrasts_and_b0_not_angio():
    assert prior.supports(["T1w", "T2w"]) and prior.supports(["b0", "T1w"])
    assert not prior.supports(["T1w", "T2w", "PDw", "angio"])


def test_the_prior_is_simulated_at_the_cohorts_median_voxel_size(tmp_path):
    for i, voxel in enumerate((1.1, 0.9, 1.0, 3.0)):
        anat = tmp_path / f"sub-{i}" / "anat"
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32),
                                 np.diag([voxel, voxel, 2 * voxel, 1])),
                 anat / f"sub-{i}_T1w.nii.gz")
    subjects = Cohort.discover(tmp_path).subjects
    assert prior.prior_resolution(subjects, "T1w") == 1.0  # median 1.05, in 0.25 mm steps
    assert prior.prior_resolution(subjects[3:], "T1w") == 3.0


def test_training_adds_the_simulated_subjects_to_training_only(tmp_path_factory, capsys):
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    run = _prior_run(tmp_path_factory)
    state = load_checkpoint(run.best_checkpoint)
    meta = checkpoint_metadata(state)
    recorded = meta.training["simulated_prior"]
    assert recorded["subjects"] == 1 and recorded["resolution_mm"] == 3.0
    assert "randomize=0.7" in recorded["augment"]
    # The split, the LUT and the training summary are the cohort's own: the same as without.
    alone = train(TrainConfig(**_config(tmp_path_factory, "alone", simulated_subjects=0)))
    plain = load_checkpoint(alone.best_checkpoint)
    plain_meta = checkpoint_metadata(plain)
    assert state["split"] == plain["split"]
    assert not any(i.startswith("prior") for ids in state["split"].values() for i in ids)
    assert state["baseline"] == plain["baseline"]
    assert meta.training_summary == plain_meta.training_summary
    assert plain_meta.training["simulated_prior"] is None
    # The weights differ: the simulated slices were trained on.
    a, b = state["model_state"], plain["model_state"]
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    folder = Path(_RUNS["cache"]) / "simulated"
    made = sorted(p.name for p in folder.glob("simulated-3mm-1-seed*/sub-001/*/*.nii.gz"))
    assert made == ["sub-001_T1w.nii.gz", "sub-001_T2w.nii.gz"]  # only what the task needs


def test_the_prior_cohort_is_made_once_and_reused(tmp_path_factory, capsys):
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    _prior_run(tmp_path_factory)
    capsys.readouterr()
    train(TrainConfig(**_config(tmp_path_factory, "again", epochs=1)))
    assert "generating" not in capsys.readouterr().err


def test_a_run_with_the_prior_resumes_exactly(tmp_path_factory):
    assert_resume_matches(_prior_run(tmp_path_factory), _config(tmp_path_factory, "resumed"))


def test_a_task_the_simulator_cannot_image_trains_without_the_prior(tmp_path_factory, tmp_path,
                                                                     capsys):
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    data = tmp_path / "cohort"
    shutil.copytree(tiny_cohort_dir(tmp_path_factory), data)
    for t1 in data.glob("sub-*/anat/*_T1w.nii.gz"):  # an angio beside every T1w
        shutil.copy(t1, t1.with_name(t1.name.replace("_T1w", "_angio")))
    run = train(TrainConfig(**_config(tmp_path_factory, "angio", data=str(data),
                                      sources=["T1w"], target="angio", epochs=1)))
    assert "does not image angio" in capsys.readouterr().err
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint

    meta = checkpoint_metadata(load_checkpoint(run.best_checkpoint))
    assert meta.training["simulated_prior"] is None


def test_the_model_card_says_what_the_prior_was(tmp_path_factory):
    from mri2mri.runtime.qc.synthesis import model_card
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint

    meta = checkpoint_metadata(load_checkpoint(_prior_run(tmp_path_factory).best_checkpoint))
    html = str(model_card(meta))
    assert "simulated prior" in html and "1 simulated subjects at 3.0 mm" in html


def test_a_broken_simulation_names_the_folder(tmp_path, monkeypatch):
    from rich.console import Console

    def fail(*args, **kwargs):
        raise InputError(None, "nilearn is not installed")

    monkeypatch.setattr("mri2mri.data.simulate.demo_cohort.generate_cohort", fail)
    with pytest.raises(InputError, match="simulated-2mm-1-seed.*could not simulate"):
        prior.prior_subjects(1, seed=0, resolution=2.0, root=tmp_path,
                             console=Console(quiet=True))


def test_each_training_subject_gets_its_own_transform():
    from mri2mri.train.dataset import CachedSlices

    class Entry:  # the parts of a CachedSubject the dataset reads
        def __init__(self, value: float) -> None:
            self.height = self.width = 4
            self.keep = np.array([0])
            self.path = Path("entry")
            self._arrays = {"sources": np.full((1, 1, 4, 4), value, np.float32),
                            "target": np.full((1, 4, 4), value, np.float32)}

        def array(self, name: str) -> np.ndarray:
            return self._arrays[name]

    def negate(source, target, rng):
        return -source, target

    data = CachedSlices([Entry(1.0), Entry(2.0)], subject_transforms=[None, negate])
    assert float(data[(0, 0, 0)][0].mean()) == 1.0
    assert float(data[(0, 1, 1)][0].mean()) == -2.0
    with pytest.raises(ValueError, match="one entry per subject"):
        CachedSlices([Entry(1.0)], subject_transforms=[None, negate])


def test_mri2mri_run_of_a_prior_trained_model_matches_pytorch(tmp_path_factory, tmp_path):
    subject = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[-1]
    assert_run_matches_pytorch(_prior_run(tmp_path_factory).best_checkpoint, subject, tmp_path)
