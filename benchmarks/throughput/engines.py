"""What is timed: one batch of slices through PyTorch eager or an onnxruntime session.

The onnxruntime engine uses the runtime's own `session_options` and `SliceRunner`
(what `mri2mri-run` does), and on a GPU the runtime's `Synthesizer` with its
provider options, so the benchmark measures the shipped code path. The only
departure is `optimisation="disable"`/``"untuned"`` (CPU), which the CI gate
uses to show that it fails when the runtime is made slow.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.providers import CPU, CUDA, TENSORRT, open_session
from mri2mri.runtime.engine.session import SliceRunner, session_options
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

OPTIMISATIONS = ("runtime", "disable", "untuned")


class TorchEngine:
    """PyTorch eager inference as the training code runs it (no_grad, eval mode)."""

    def __init__(self, model: torch.nn.Module, threads: int, device: str = "cpu") -> None:
        self.threads, self.device = threads, torch.device(device)
        self.model = model.to(self.device).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch.set_num_threads(self.threads)  # process-wide: reset before every timed call
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
            return out.float().cpu().numpy()


def ort_options(threads: int, optimisation: str = "runtime") -> ort.SessionOptions:
    """The runtime's session options, or one of the deliberately slow variants."""
    if optimisation not in OPTIMISATIONS:
        raise ValueError(f"optimisation must be one of {OPTIMISATIONS}, got {optimisation!r}")
    options = session_options(threads)
    if optimisation in ("disable", "untuned"):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimisation == "untuned":
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return options


#: The runtime's device name for each GPU provider.
DEVICE_OF = {CUDA: "cuda", TENSORRT: "tensorrt"}


def gpu_skip_reason(provider: str, model_path: Path | None = None) -> str | None:
    """None when `provider` (CUDA, TensorRT, or PyTorch's CUDA) really runs here, else why not.

    For onnxruntime the answer is the runtime's own (`open_session` on the
    benchmark model): the reason it gives is the one a user would see.
    """
    if provider == "torch-cuda":
        return None if torch.cuda.is_available() else "no CUDA device visible to PyTorch"
    if model_path is None:
        raise ValueError("an onnxruntime provider is probed with the benchmark's model")
    try:
        open_session(Path(model_path).read_bytes(), session_options(1), DEVICE_OF[provider],
                     model_path)
    except InputError as exc:
        return str(exc)
    return None


class OrtEngine:
    """An onnxruntime session run through the runtime's `SliceRunner` (IO binding).

    On the CPU the session is opened with the runtime's options (or a slow
    variant, for the gate). On a GPU it is a `Synthesizer`, so the provider
    options are exactly what `mri2mri-run` uses (CUDA with TF32 off; TensorRT
    with its shape profile, engine cache and precision); `prepare` then builds
    the engine for the slice size, and its time (`setup_seconds`) is reported
    apart from the steady-state throughput.
    """

    def __init__(self, model_path: Path, threads: int, batch_size: int, *,
                 provider: str = CPU, optimisation: str = "runtime",
                 trt_cache: Path | bool = True) -> None:
        self.threads, self.provider, self.setup_seconds = threads, provider, 0.0
        self.synth: Synthesizer | None = None
        if provider == CPU:
            options = ort_options(threads, optimisation)
            session, used = open_session(Path(model_path).read_bytes(), options, "cpu",
                                         model_path)
            self.runner = SliceRunner(session, used, batch_size)
            return
        if optimisation != "runtime":
            raise ValueError("GPU engines run with the runtime's settings only")
        self.synth = Synthesizer(model_path, device=DEVICE_OF[provider], threads=threads,
                                 batch_size=batch_size, trt_cache=trt_cache)
        self.runner = self.synth.runner

    def prepare(self, height: int, width: int) -> float:
        """Build (TensorRT) or warm up (CUDA: cuDNN's algorithm search) for this slice size."""
        if self.synth is None:
            return 0.0
        start = time.perf_counter()
        self.runner = self.synth.runner_for(height, width)
        if self.synth.provider == CUDA:
            self.runner.warm_up(self.synth.meta.input_channels, height, width)
        self.setup_seconds = self.synth.engine_seconds.get(
            (height, width), time.perf_counter() - start)
        return self.setup_seconds

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)
