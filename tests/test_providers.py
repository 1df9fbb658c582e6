"""GPU deployment without a GPU: TensorRT options per model, provider failure reasons, devices.

What runs here is real: the options the runtime builds, the cache folder, the
failure reasons onnxruntime gives on this machine. Where a GPU provider has to
*behave* a certain way (write a native error line, build an engine), onnxruntime's
session constructor is replaced by one that does what onnxruntime does on such a
machine, and the runtime's handling of it is what is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)
from test_bad_inputs import run_cli
from typer.testing import CliRunner

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine import providers
from mri2mri.runtime.engine.providers import CPU, CUDA, TENSORRT, failure_reason, open_session
from mri2mri.runtime.engine.session import session_options
from mri2mri.runtime.engine.tensorrt import ShapeProfile, announcement, is_cached, tensorrt_version
from mri2mri.runtime.synthesis import synthesizer
from mri2mri.runtime.synthesis.synthesizer import Synthesizer, Timings

CUDA_LINE = (b"\x1b[1;31m2026-11-27 12:58:36 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 "
             b"operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 "
             b"onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 "
             b": FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: "
             b"libcudnn.so.9: cannot open shared object file: No such file or directory\x1b[m\n")
CUDA_REASON = "libcudnn.so.9: cannot open shared object file: No such file or directory"


@pytest.fixture(autouse=True)
def fresh_provider_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process: no provider known broken, preload not yet run."""
    monkeypatch.setattr(providers, "_BROKEN", {})


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two models of the same 'preset' (identical graphs) with different weights."""
    d = tmp_path_factory.mktemp("pair")
    return (channel_picker(d / "a.onnx", ["T1w", "T2w"], "PDw", pick=0),
            channel_picker(d / "b.onnx", ["T1w", "T2w"], "PDw", pick=1))


def _names(chain: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in chain]


@pytest.fixture()
def broken_gpu(monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """onnxruntime as on a machine without cuDNN and TensorRT; returns the chains asked for.

    CUDA: onnxruntime writes the loader error to fd 2 and quietly runs on the CPU.
    TensorRT: it raises with the C++ location in front of the message.
    """
    real = ort.InferenceSession
    asked: list[list] = []

    def session(model, sess_options=None, providers=None, enable_fallback=1):
        asked.append(providers)
        first = _names(providers)[0]
        if first == TENSORRT:
            raise RuntimeError("/onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc"
                               ":729 void f(PySessionOptions&, const ProviderOptions&) No "
                               "TensorRT-capable GPU found")
        if first == CUDA:
            os.write(2, CUDA_LINE)
        return real(model, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(providers, "_PRELOAD_NOTES", [])
    return asked


def test_two_models_never_share_an_engine(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cache = tmp_path / "not" / "yet" / "there"
    a, b = (Synthesizer(p, device="cpu", batch_size=8, trt_cache=cache) for p in pair)
    opts_a, opts_b = a.tensorrt_options(64, 48), b.tensorrt_options(64, 48)
    assert cache.is_dir()  # created, parents included
    for synth, opts, path in ((a, opts_a, pair[0]), (b, opts_b, pair[1])):
        assert opts["trt_engine_cache_enable"] is True
        assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(cache)
        prefix = str(opts["trt_engine_cache_prefix"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() in prefix
        assert f"ort{ort.__version__.replace('.', '_')}" in prefix
        assert f"trt{(tensorrt_version() or 'unknown').replace('.', '_')}" in prefix
        assert prefix.replace("_", "").isalnum()
        assert opts["trt_fp16_enable"] is False and synth.precision == "fp32"
        channels = synth.meta.input_channels
        assert opts["trt_profile_min_shapes"] == f"slices:1x{channels}x64x48"
        assert opts["trt_profile_opt_shapes"] == f"slices:8x{channels}x64x48"
        assert opts["trt_profile_max_shapes"] == f"slices:8x{channels}x64x48"
    assert opts_a["trt_engine_cache_prefix"] != opts_b["trt_engine_cache_prefix"]
    # Stable for one model; a new slice size or precision is a new engine, not an overwrite.
    assert a.tensorrt_options(64, 48) == opts_a
    assert a.tensorrt_options(80, 48)["trt_engine_cache_prefix"] != opts_a[
        "trt_engine_cache_prefix"]
    a.meta.training = {"export": {"precision": "fp16"}}
    half = a.tensorrt_options(64, 48)
    assert half["trt_fp16_enable"] is True and "_fp16_" in str(half["trt_engine_cache_prefix"])
    # Model A's engine in the cache is not model B's.
    Path(cache, f"{opts_a['trt_engine_cache_prefix']}_sm80.engine").write_bytes(b"x")
    assert is_cached(opts_a) and not is_cached(opts_b)


def test_cache_off_and_fixed_batch(tmp_path: Path) -> None:
    path = channel_picker(tmp_path / "fixed.onnx", ["T1w"], "T2w", batch=4)
    synth = Synthesizer(path, device="cpu", batch_size=8, trt_cache=False)
    opts = synth.tensorrt_options(32, 32)
    assert opts["trt_engine_cache_enable"] is False
    assert "trt_engine_cache_path" not in opts and "trt_engine_cache_prefix" not in opts
    # A fixed-batch model: the profile is that batch; the runner pads the short last batch.
    assert opts["trt_profile_min_shapes"] == opts["trt_profile_max_shapes"] == "slices:4x1x32x32"


def test_unusable_cache_folder_is_a_clear_error(pair: tuple[Path, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    synth = Synthesizer(pair[0], device="cpu", trt_cache=blocker / "tensorrt")
    with pytest.raises(InputError, match="cannot create the TensorRT engine cache.*--no-trt-cache"):
        synth.tensorrt_options(32, 32)


def test_profile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        ShapeProfile("a:b", 1, 32, 32, 1, 8)
    with pytest.raises(ValueError):
        ShapeProfile("x", 1, 32, 32, 9, 8)


def test_failure_reason_is_carried_to_every_message(pair: tuple[Path, Path], tmp_path: Path,
                                                   broken_gpu: list,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t1.nii.gz"
    nib_img = nifti(volume((12, 14, 5)))
    nib_img.to_filename(src)
    model = channel_picker(tmp_path / "t1.onnx", ["T1w"], "T2w")
    out = tmp_path / "o.nii.gz"
    code, _, err = run_cli(["--model", model, "--input", src, "--output", out, "--device",
                            "cuda"], capsys)
    assert code == 1 and not out.exists()
    assert err.strip().splitlines() == [f"error: --device cuda: CUDA did not start "
                                        f"({CUDA_REASON}); use --device cpu or auto"]
    code, stdout, err = run_cli(["--model", model, "--input", src, "--output", out, "--device",
                                 "auto", "--verbose"], capsys)
    assert code == 0 and out.exists() and "provider CPU" in stdout
    assert f"provider CUDA not used: {CUDA_REASON}" in stdout
    assert "provider TensorRT not used: No TensorRT-capable GPU found" in stdout
    assert "libcudnn" not in err  # onnxruntime's own lines were captured, not printed
    synth = Synthesizer(model, device="auto")
    assert synth.provider == CPU and synth.provider_failures == {
        "TensorRT": "No TensorRT-capable GPU found", "CUDA": CUDA_REASON}
    info = synth.execution_info()  # what a run report or sidecar records
    assert json.loads(json.dumps(info)) == info
    assert info["provider"] == "CPU" and info["device"] == "auto"
    assert info["provider_failures"] == synth.provider_failures
    # The CUDA session asked for is the runtime's: TF32 off.
    assert (CUDA, {"use_tf32": "0"}) in [p for chain in broken_gpu for p in chain]


def test_real_onnxruntime_on_this_machine(pair: tuple[Path, Path]) -> None:
    """No stand-ins: CUDA either really runs, or the reason onnxruntime gave is reported."""
    data, failures = pair[0].read_bytes(), {}
    try:
        session, provider = open_session(data, session_options(1), "cuda", pair[0],
                                         failures=failures)
    except InputError as exc:
        reason = failures["CUDA"]
        assert reason and reason != "failed to start" and reason in str(exc)
        assert "\n" not in str(exc)
        _, provider = open_session(data, session_options(1), "auto", pair[0],
                                   failures=(auto := {}))
        assert auto["CUDA"] == reason and provider in (TENSORRT, CPU)
    else:
        assert provider == CUDA == session.get_providers()[0] and not failures


def test_failure_reason_parsing() -> None:
    log = [CUDA_LINE.decode().replace("\x1b[1;31m", "").replace("\x1b[m", ""),
           "[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 Create] Failed to create "
           "CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install..."]
    reason = failure_reason(None, log)
    assert reason.startswith(CUDA_REASON) and "needs cuDNN 9.* and CUDA 13.*" in reason
    assert failure_reason(None, []) == "onnxruntime gave no reason"
    assert failure_reason(RuntimeError("[ONNXRuntimeError] : 1 : FAIL : out of memory"),
                          []) == "out of memory"


@pytest.fixture()
def tensorrt_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Synthesizer's first session 'starts on TensorRT' (a CPU session standing in)."""
    real_open = synthesizer.open_session

    def open_session(model, options, device, source, **kwargs):
        if TENSORRT in kwargs.get("skip", ()):
            return real_open(model, options, device, source, **kwargs)
        session, _ = real_open(model, options, "cpu", source, **kwargs)
        return session, TENSORRT

    monkeypatch.setattr(synthesizer, "open_session", open_session)


def test_tensorrt_sessions_per_slice_size(pair: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          tensorrt_starts: None) -> None:
    """One engine per padded slice size, built once, announced once, then read from the cache.

    TensorRT is stood in for by a CPU session that writes the engine file TensorRT would.
    """
    built: list[dict] = []
    real_try = providers.try_provider

    def fake_trt(model, options, provider, provider_options=None):
        if provider != TENSORRT:
            return real_try(model, options, provider, provider_options)
        built.append(dict(provider_options))
        folder = Path(provider_options["trt_engine_cache_path"])
        (folder / f"{provider_options['trt_engine_cache_prefix']}_sm90.engine").write_bytes(b"")
        return ort.InferenceSession(model, options, providers=[CPU]), None

    monkeypatch.setattr(synthesizer, "try_provider", fake_trt)
    cache, notes = tmp_path / "cache", []
    synth = Synthesizer(pair[0], device="tensorrt", batch_size=4, trt_cache=cache,
                        notify=notes.append)
    assert synth.provider == TENSORRT and cache.is_dir()
    small, large = nifti(volume((20, 23, 9))), nifti(volume((40, 23, 9)))
    timings = [Timings() for _ in range(3)]
    for img, timing in zip((small, small, large), timings, strict=True):
        synth._synthesize([img, img], ["T1w", "T2w"], resample_to_first=False, progress=None,
                             timings=timing)
    # The build is its own stage, on the first volume of each size only.
    assert timings[0].engine >= synth.engine_seconds[(24, 24)] > 0 and timings[1].engine < 0.01
    assert [b["trt_profile_max_shapes"] for b in built] == ["slices:4x2x24x24",
                                                            "slices:4x2x40x24"]
    assert len(notes) == 2 and all(n.startswith("building TensorRT engine for ") for n in notes)
    assert set(synth.engine_seconds) == {(24, 24), (40, 24)}
    # A new process with the same model: engine cached, no announcement, estimate recorded.
    again = Synthesizer(pair[0], device="tensorrt", batch_size=4, trt_cache=cache,
                        notify=notes.append)
    again.synthesize([small, small])
    assert len(notes) == 2
    # The retrained model of the same shape gets its own engine, announced with an estimate.
    other = Synthesizer(pair[1], device="tensorrt", batch_size=4, trt_cache=cache,
                        notify=notes.append)
    other.synthesize([small, small])
    assert len(notes) == 3 and "(last build on this machine)" in notes[-1]
    assert built[-1]["trt_engine_cache_prefix"] != built[0]["trt_engine_cache_prefix"]


def test_tensorrt_without_engine_falls_back_only_for_auto(pair: tuple[Path, Path],
                                                          broken_gpu: list,
                                                          tensorrt_starts: None,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(synthesizer, "try_provider",
                        lambda *a, **k: (None, "out of GPU memory"))
    img = nifti(volume((20, 23, 9)))
    for device in ("auto", "tensorrt"):
        notes: list[str] = []
        synth = Synthesizer(pair[0], device=device, trt_cache=False, notify=notes.append)
        assert synth.provider == TENSORRT
        if device == "tensorrt":
            with pytest.raises(InputError, match="--device tensorrt: no TensorRT engine for "
                                                 "24x24, batch 1-8 .out of GPU memory"):
                synth.synthesize([img, img])
            continue
        out = synth.synthesize([img, img])
        assert synth.provider == CPU and np.isfinite(out.get_fdata()).all()
        assert synth.provider_failures["TensorRT"] == ("no engine for 24x24, batch 1-8: "
                                                       "out of GPU memory")
        assert "engine cache off" in notes[0] and notes[-1].endswith("running on CPU")


def test_announcement_without_history() -> None:
    profile = ShapeProfile("x", 1, 256, 256, 1, 8)
    assert "often minutes" in announcement(None, "k", profile)


@pytest.mark.parametrize("command", ["run", "register", "train", "export", "bench"])
def test_every_cli_refuses_a_bad_device_the_same_way(command: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    from mri2mri.runtime.core.cli_common import run_app

    dummy = tmp_path / "x.nii.gz"
    if command == "run":
        from mri2mri.runtime.synthesis.cli_run import app
        argv, allowed, option = ["--model", "m.onnx", "--input", str(dummy), "--output",
                                 str(tmp_path / "o.nii.gz"), "--device", "gpu"], \
            "auto, tensorrt, cuda, cpu", "--device"
    elif command == "register":
        from mri2mri.runtime.registration.cli import app
        argv, allowed, option = ["--moving", str(dummy), "--static", str(dummy), "--out-affine",
                                 str(tmp_path / "a.txt"), "--device", "gpu"], \
            "auto, tensorrt, cuda, cpu", "--device"
    elif command == "train":
        from mri2mri.train.cli_train import app
        argv, allowed, option = ["--data", str(tmp_path), "--source", "T1w", "--target", "T2w",
                                 "--out", str(tmp_path / "run"), "--device", "gpu"], \
            "auto, cuda, cpu", "--device"
    elif command == "export":
        from mri2mri.export.cli import app
        argv, allowed, option = [str(tmp_path / "c.pt"), "--out", str(tmp_path / "m.onnx"),
                                 "--check-on", "gpu"], "cpu, cuda", "--check-on"
    else:
        from mri2mri.benchmarks.cli import app
        argv, allowed, option = ["registration", "--data", str(tmp_path), "--out",
                                 str(tmp_path / "b"), "--device", "gpu"], \
            "auto, tensorrt, cuda, cpu", "--device"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_app(app, argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err == f"error: {option} must be one of {allowed} (got 'gpu')\n"


def test_export_cli_help_lists_check_on() -> None:
    from mri2mri.export.cli import app

    assert "--check-on" in CliRunner().invoke(app, ["--help"]).output
