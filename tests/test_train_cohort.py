"""A tiny synthetic paired cohort for the training/export tests (seconds to make).

Three tissues in nested ellipsoids with per-subject contrast, gain and noise,
written as BIDS T1w/T2w/PDw on one grid and a 4D DWI (2 b=0 + 1 b=1000) on a
coarser, shifted grid, so b0 -> T1w exercises cross-grid resampling. Kept
separate from the demo generator so these tests do not depend on its runtime.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (32, 36, 12)
VOXEL = 3.0


def _phantom(shape: tuple[int, int, int], voxel: float, rng: np.random.Generator,
             origin: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    axes = [origin[i] + voxel * np.arange(n) for i, n in enumerate(shape)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    wobble = 1 + 0.05 * np.sin(x / 9 + rng.uniform(0, 6)) * np.cos(y / 11)
    r = np.sqrt((x / 44) ** 2 + (y / 52) ** 2 + (z / 40) ** 2) * wobble
    ventricle = np.sqrt(((x - 4) / 8) ** 2 + (y / 16) ** 2 + (z / 14) ** 2)
    tissue = {"csf": ((r < 1.0) & (r >= 0.9)) | (ventricle < 1),
              "gm": (r < 0.9) & (r >= 0.7) & (ventricle >= 1),
              "wm": (r < 0.7) & (ventricle >= 1)}
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return {k: v.astype(np.float32) for k, v in tissue.items()}, affine


_CONTRAST = {"T1w": {"wm": 1.0, "gm": 0.7, "csf": 0.25}, "T2w": {"wm": 0.45, "gm": 0.6, "csf": 1.0},
             "PDw": {"wm": 0.7, "gm": 0.8, "csf": 1.0}, "b0": {"wm": 0.4, "gm": 0.55, "csf": 1.0}}


def _image(tissue: dict[str, np.ndarray], contrast: str, rng: np.random.Generator) -> np.ndarray:
    gain = rng.uniform(500, 1500)
    data = sum(tissue[k] * v * rng.uniform(0.93, 1.07) for k, v in _CONTRAST[contrast].items())
    noise = rng.normal(0, 0.02, data.shape) + 1j * rng.normal(0, 0.02, data.shape)
    return (np.abs(data + noise) * gain).astype(np.float32)


def make_cohort(root: Path, subjects: int = 5, seed: int = 0) -> Path:
    """Write the cohort under `root` and return it."""
    rng = np.random.default_rng(seed)
    for i in range(subjects):
        sub = f"sub-{i + 1:02d}"
        anat, dwi = root / sub / "anat", root / sub / "dwi"
        anat.mkdir(parents=True)
        dwi.mkdir(parents=True)
        origin = -VOXEL * np.array(SHAPE) / 2
        tissue, affine = _phantom(SHAPE, VOXEL, rng, origin)
        for contrast in ("T1w", "T2w", "PDw"):
            nib.save(nib.Nifti1Image(_image(tissue, contrast, rng), affine),
                     anat / f"{sub}_{contrast}.nii.gz")
        dshape, dvox = (24, 28, 9), 4.0
        dtissue, daffine = _phantom(dshape, dvox, rng, -dvox * np.array(dshape) / 2 + 1.0)
        b0 = [_image(dtissue, "b0", rng) for _ in range(2)]
        series = np.stack(b0 + [b0[0] * 0.3], axis=-1)
        nib.save(nib.Nifti1Image(series, daffine), dwi / f"{sub}_dwi.nii.gz")
        (dwi / f"{sub}_dwi.bval").write_text("0 0 1000\n")
        (dwi / f"{sub}_dwi.bvec").write_text("1 0 0\n0 1 0\n0 0 1\n")
    return root


#: Tiny-run settings shared by the training and export tests: a few seconds each.
#: Without the simulated prior (its own tests, tests/test_train_prior.py, train with it):
#: the tiny phantom trains in seconds, the prior's simulation would take longer.
TINY = {"epochs": 2, "slices_per_epoch": 8, "batch_size": 4, "threads": 1,
        "simulated_subjects": 0}
_CACHE: dict[str, object] = {}


def tiny_cohort_dir(tmp_path_factory) -> Path:
    """One cohort per test session, shared by the test modules that import this."""
    if "cohort" not in _CACHE:
        _CACHE["cohort"] = make_cohort(tmp_path_factory.mktemp("tiny_cohort"))
    return _CACHE["cohort"]  # type: ignore[return-value]


def tiny_run(tmp_path_factory, sources: tuple[str, ...] = ("T1w",), target: str = "T2w"):
    """A finished tiny training run (RunResult), trained once per session and task."""
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    key = "run:" + "+".join(sources) + "->" + target
    if key not in _CACHE:
        out = tmp_path_factory.mktemp("run") / "run"
        config = TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=list(sources),
                             target=target, out=str(out), **TINY)
        _CACHE[key] = train(config)
    return _CACHE[key]


def assert_resume_matches(reference, config: dict):
    """Train `config` (TrainConfig fields), stop it after epoch 1 as Ctrl-C would, resume
    it, and check that it ends with `reference`'s weights; returns the resumed RunResult."""
    import pytest
    import torch

    from mri2mri.train.checkpoint import load_checkpoint
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    def crash(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config), on_epoch_end=crash)
    assert load_checkpoint(Path(config["out"]) / "last.pt")["epoch"] == 0
    resumed = train(TrainConfig(**config), resume=True)
    a = load_checkpoint(reference.last_checkpoint)["model_state"]
    b = load_checkpoint(resumed.last_checkpoint)["model_state"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    return resumed


def assert_run_matches_pytorch(checkpoint: Path, subject, tmp_path: Path) -> None:
    """Export `checkpoint`, synthesize `subject`'s T1w with mri2mri-run, and check that the
    file equals PyTorch's synthesis within 1e-4 of the target scale."""
    import nibabel as nib
    import numpy as np
    from cli_helpers import exit_code

    from mri2mri.export.onnx_export import export_checkpoint
    from mri2mri.runtime.synthesis.cli_run import app as run_cli
    from mri2mri.train.inference import synthesize_with_checkpoint

    report = export_checkpoint(checkpoint, tmp_path / "model.onnx")
    assert report.max_abs_diff <= 1e-4
    out = tmp_path / "synth.nii.gz"
    assert exit_code(run_cli, ["--model", str(report.path), "--input",
                               f"T1w={subject.path('T1w')}", "--output", str(out),
                               "--device", "cpu"]) == 0
    reference = synthesize_with_checkpoint(checkpoint, [subject.load("T1w")])
    diff = np.abs(np.asarray(nib.load(str(out)).dataobj) - np.asarray(reference.dataobj)).max()
    assert diff <= 1e-4 * report.metadata.normalisation.target_scale
