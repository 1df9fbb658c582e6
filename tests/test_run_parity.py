"""mri2mri-run (onnxruntime) and the PyTorch checkpoint give the same synthesis of a volume."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from cli_helpers import exit_code
from test_train_cohort import tiny_cohort_dir, tiny_run

from mri2mri.data.cohort import Cohort
from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.synthesis.cli_run import app
from mri2mri.runtime.synthesis.synthesizer import Synthesizer
from mri2mri.train.inference import (
    model_from_checkpoint,
    predict_slices,
    synthesize_with_checkpoint,
)


def test_cli_output_matches_the_checkpoint(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    model_path = export_checkpoint(run.best_checkpoint, tmp_path / "model.onnx").path
    subject = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[-1]
    out = tmp_path / "synth.nii.gz"
    assert exit_code(app, ["--model", str(model_path), "--input", f"T1w={subject.path('T1w')}",
                           "--output", str(out), "--device", "cpu"]) == 0
    source = subject.load("T1w")
    reference = synthesize_with_checkpoint(run.best_checkpoint, [source])
    written = nib.load(str(out))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)

    # Same preprocessing, so the network outputs themselves agree within 1e-4 ...
    synthesizer = Synthesizer(model_path, device="cpu")
    meta = synthesizer.meta
    prepared = prepare_sources([source], meta.geometry, meta.normalisation, names=["T1w"])
    onnx_out = synthesizer.runner.run(prepared.slices)
    torch_out = predict_slices(model_from_checkpoint(run.best_checkpoint)[0], prepared.slices)
    assert np.abs(onnx_out - torch_out).max() <= 1e-4
    # ... and the written volumes agree within 1e-4 of the target intensity scale.
    diff = np.abs(np.asarray(written.dataobj) - np.asarray(reference.dataobj)).max()
    assert diff <= 1e-4 * meta.normalisation.target_scale
