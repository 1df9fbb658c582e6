"""The Python API of the ONNX runtime: exact values, geometry, channel order, batching."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    oblique_affine,
    volume,
)

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.normalize import foreground_mask, intensity_scale
from mri2mri.runtime.synthesis.synthesizer import Synthesizer, Timings

TARGET_SCALE = 500.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "t1": channel_picker(d / "t1.onnx", ["T1w"], "T2w", target_scale=TARGET_SCALE),
        "t1_conv3": channel_picker(d / "t1_3.onnx", ["T1w"], "T2w", kernel=3,
                                   target_scale=TARGET_SCALE),
        "pick_t1": channel_picker(d / "p0.onnx", ["T1w", "T2w"], "PDw", pick=0),
        "pick_t2": channel_picker(d / "p1.onnx", ["T1w", "T2w"], "PDw", pick=1),
        "fixed": channel_picker(d / "fixed.onnx", ["T1w"], "T2w", batch=4),
    }


def expected(data: np.ndarray, target_scale: float = TARGET_SCALE) -> np.ndarray:
    """An identity network maps a source voxel v to v * target_scale / source_scale."""
    return data * (target_scale / intensity_scale(data, foreground_mask(data)))


def lps_affine() -> np.ndarray:
    return np.array([[-2.0, 0, 0, 30], [0, -2.0, 0, 40], [0, 0, 3.0, -10], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 3.0, 1.0]), lps_affine(),
                                    oblique_affine()], ids=["RAS", "LPS", "oblique"])
@pytest.mark.parametrize("model", ["t1", "t1_conv3"])
def test_output_keeps_geometry_and_values(models: dict[str, Path], affine: np.ndarray,
                                          model: str) -> None:
    data = volume((19, 22, 7))
    img = nifti(data, affine, qform_code=1, sform_code=2)
    out = Synthesizer(models[model], device="cpu").synthesize({"T1w": img})
    assert out.shape == img.shape
    np.testing.assert_allclose(out.affine, img.affine, atol=1e-6)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    np.testing.assert_allclose(out.get_qform(), img.get_qform(), atol=1e-5)
    assert out.header.get_xyzt_units() == ("mm", "sec")
    assert out.get_data_dtype() == np.float32
    assert out.header["descrip"].item().decode() == f"mri2mri T1w->T2w model={models[model].name}"
    np.testing.assert_allclose(np.asarray(out.dataobj), expected(data), rtol=1e-5, atol=1e-3)


def test_saved_output_round_trips(models: dict[str, Path], tmp_path: Path) -> None:
    data = volume()
    src = tmp_path / "sub_T1w.nii.gz"
    nib.save(nifti(data, oblique_affine()), src)
    timings = Synthesizer(models["t1"]).synthesize_file([src], tmp_path / "out.nii.gz")
    assert isinstance(timings, Timings) and timings.total > 0 and timings.inference > 0
    assert set(timings.as_dict()) == {"load", "preprocess", "engine", "inference", "postprocess",
                                      "write", "ood_check", "total"}
    assert timings.ood_check == 0.0  # no check after inference was asked for
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back.affine, oblique_affine(), atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), expected(data), rtol=1e-5, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz", "sub_T1w.nii.gz"]


@pytest.mark.parametrize("model, picked", [("pick_t1", 0), ("pick_t2", 1)])
def test_channels_follow_the_model_order_not_the_call_order(models: dict[str, Path], model: str,
                                                            picked: int) -> None:
    t1, t2 = volume(seed=1), volume(seed=2)[::-1].copy()
    synth = Synthesizer(models[model])
    # Given in reverse order and with aliases: the model's metadata decides the channel order.
    out = synth.synthesize({"t2": nifti(t2), "T1": nifti(t1)})
    np.testing.assert_allclose(np.asarray(out.dataobj), expected((t1, t2)[picked]),
                               rtol=1e-5, atol=1e-3)
    positional = synth.synthesize([nifti(t1), nifti(t2)])
    np.testing.assert_array_equal(np.asarray(positional.dataobj), np.asarray(out.dataobj))


def test_batch_size_does_not_change_the_result(models: dict[str, Path]) -> None:
    img = nifti(volume((16, 18, 11)))
    results = [np.asarray(Synthesizer(models["t1_conv3"], batch_size=b).synthesize([img]).dataobj)
               for b in (1, 3, 32)]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_fixed_batch_model_and_progress(models: dict[str, Path]) -> None:
    data = volume((16, 16, 10))  # 10 slices: batches of 4, 4 and a padded 2
    calls: list[tuple[int, int]] = []
    synth = Synthesizer(models["fixed"], batch_size=8)
    assert synth.runner.batch_size == 4
    out = synth.synthesize([nifti(data)], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]
    np.testing.assert_allclose(np.asarray(out.dataobj), expected(data), rtol=1e-5, atol=1e-3)


def test_metadata_and_provider_are_exposed(models: dict[str, Path]) -> None:
    synth = Synthesizer(models["pick_t2"], device="auto", threads=1)
    assert (synth.sources, synth.target, synth.task) == (["T1w", "T2w"], "PDw", "T1w+T2w->PDw")
    assert synth.provider_name in {"CPU", "CUDA", "TensorRT"}
    assert synth.provider in synth.session.get_providers()
    assert synth.session.get_session_options().intra_op_num_threads == 1
    assert Synthesizer(models["t1"], device="cpu").provider_name == "CPU"


def test_resample_to_first(models: dict[str, Path]) -> None:
    t1 = nifti(volume((16, 18, 8), seed=3))
    coarse_affine = np.diag([4.0, 4.0, 6.0, 1.0])
    t2 = nifti(volume((8, 9, 4), seed=4), coarse_affine)
    synth = Synthesizer(models["pick_t1"])
    with pytest.raises(InputError, match="--resample-to-first"):
        synth.synthesize({"T1w": t1, "T2w": t2})
    out = synth.synthesize({"T1w": t1, "T2w": t2}, resample_to_first=True)
    assert out.shape == t1.shape
    np.testing.assert_allclose(np.asarray(out.dataobj), expected(np.asarray(t1.dataobj)),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("inputs, message", [
    ({"T2w": 0}, "contrast T2w is not a source of model T1w->T2w"),
    ({"flair": 0}, "unknown contrast 'flair'"),
    ([0, 0], "needs 1 input"),
])
def test_input_names_are_checked_against_the_model(models: dict[str, Path], inputs: object,
                                                   message: str) -> None:
    with pytest.raises(InputError, match=message):
        Synthesizer(models["t1"]).order_inputs(inputs)  # type: ignore[arg-type]


def test_missing_source_is_named(models: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="needs a T2w input"):
        Synthesizer(models["pick_t1"]).synthesize({"T1w": nifti(volume())})
