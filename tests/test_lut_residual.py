"""The LUT-residual network: the look-up table inside the model, corrected by the U-Net."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_train_cohort import (  # noqa: E402
    TINY,
    assert_resume_matches,
    assert_run_matches_pytorch,
    tiny_cohort_dir,
)

from mri2mri.data.cohort import Cohort  # noqa: E402
from mri2mri.runtime.imaging.slicing import stack_context  # noqa: E402
from mri2mri.train.baseline import IntensityLUT  # noqa: E402
from mri2mri.train.model import UNetConfig, build_model  # noqa: E402

_RUNS: dict[str, object] = {}


def _config(tmp_path_factory, name: str) -> dict:
    return {"data": str(tiny_cohort_dir(tmp_path_factory)), "sources": ["T1w"],
            "target": "T2w", "out": str(tmp_path_factory.mktemp(name) / "run"), **TINY,
            "lut_residual": True}


def _run(tmp_path_factory):
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    if "run" not in _RUNS:
        _RUNS["run"] = train(TrainConfig(**_config(tmp_path_factory, "lut_residual")))
    return _RUNS["run"]


@pytest.mark.parametrize(("sources", "context"), [(1, 0), (1, 2), (2, 1), (3, 0)])
def test_an_untrained_lut_residual_network_is_the_lut(sources, context):
    rng = np.random.default_rng(sources + context)
    src = rng.uniform(-1.1, 1.6, (4, sources, 32, 32)).astype(np.float32)
    tgt = np.tanh(src.sum(1, keepdims=True) + rng.normal(0, 0.1, (4, 1, 32, 32)))
    lut = IntensityLUT.fit([src[:2]], [tgt[:2].astype(np.float32)])  # unseen joint cells too
    net = build_model(UNetConfig(in_channels=sources * (2 * context + 1), levels=3,
                                 base_filters=8, input_skip=True, lut_sources=sources)).eval()
    net.lut.set(lut)
    with torch.no_grad():
        out = net(torch.from_numpy(stack_context(src, context))).numpy()
    np.testing.assert_array_equal(out, lut.predict(src))
    if sources > 1:
        assert np.isnan(lut.joint).any()  # the fallback to the first source's table is used


def test_the_config_checks_the_lut_sources():
    with pytest.raises(ValueError, match="lut_sources"):
        UNetConfig(in_channels=4, lut_sources=2)  # 2 context slices a source: not 2K+1
    with pytest.raises(ValueError, match="lut_sources"):
        UNetConfig(in_channels=3, lut_sources=2)


def test_training_starts_from_the_runs_lut_and_learns_a_correction(tmp_path_factory):
    from mri2mri.train.checkpoint import load_checkpoint
    from mri2mri.train.inference import model_from_checkpoint

    run = _run(tmp_path_factory)
    state = load_checkpoint(run.last_checkpoint)
    assert state["model_config"]["lut_sources"] == 1
    lut = IntensityLUT.from_dict(state["baseline"])
    np.testing.assert_array_equal(state["model_state"]["lut.table"].numpy(), lut.table)
    model, meta = model_from_checkpoint(state)
    assert meta.architecture["lut_sources"] == 1
    slices = np.linspace(-1, 1.2, 2 * 32 * 32, dtype=np.float32).reshape(2, 1, 32, 32)
    with torch.no_grad():
        out = model(torch.from_numpy(slices)).numpy()
    # untrained it is the LUT exactly (test above); two tiny epochs move it a little
    assert np.abs(out - lut.predict(slices)).max() > 1e-5


def test_a_lut_residual_run_resumes_exactly(tmp_path_factory):
    assert_resume_matches(_run(tmp_path_factory), _config(tmp_path_factory, "lut_resumed"))


def test_mri2mri_run_of_a_lut_residual_model_matches_pytorch(tmp_path_factory, tmp_path):
    subject = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[-1]
    assert_run_matches_pytorch(_run(tmp_path_factory).best_checkpoint, subject, tmp_path)


def test_fine_tuning_takes_this_runs_lut(tmp_path_factory):
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.updates import build_training, pretrained_state

    pretrained = _run(tmp_path_factory).best_checkpoint
    config = TrainConfig(**{**_config(tmp_path_factory, "lut_ft"),
                            "init_weights": str(pretrained)})
    other = IntensityLUT(np.linspace(-1, 1, 256, dtype=np.float32), None)
    net = build_training(config, torch.device("cpu"), pretrained_state(config), other).net
    np.testing.assert_array_equal(net.lut.table.numpy(), other.table)
