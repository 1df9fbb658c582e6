"""What is timed: one batch of slices through PyTorch eager or an onnxruntime session.

The onnxruntime engine uses the runtime's own `session_options` and `SliceRunner`
(what `mri2mri-run` does), so the benchmark measures the shipped code path. The
only departure is `optimisation="disable"`, graph optimisations off, which the
CI gate uses to show that it fails when the runtime is made slow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mri2mri.runtime.providers import CPU, CUDA, TENSORRT, open_session
from mri2mri.runtime.session import SliceRunner, session_options

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


def gpu_skip_reason(provider: str) -> str | None:
    """None when `provider` (CUDA or TensorRT) really runs here, otherwise why not."""
    if provider == "torch-cuda":
        return None if torch.cuda.is_available() else "no CUDA device visible to PyTorch"
    if provider not in ort.get_available_providers():
        return f"this onnxruntime build has no {provider}"
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    probe.ir_version = 8  # readable by every onnxruntime this project supports
    try:
        # enable_fallback=0 (as the runtime does): fail loudly instead of retrying on the CPU.
        session = ort.InferenceSession(probe.SerializeToString(), ort_options(1),
                                       providers=[provider, CPU], enable_fallback=0)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
        return f"{provider} failed to start ({str(exc).splitlines()[0][:120]})"
    if session.get_providers()[0] != provider:
        return f"{provider} is listed but falls back to the CPU (no GPU or CUDA libraries)"
    return None


class OrtEngine:
    """An onnxruntime session run through the runtime's `SliceRunner` (IO binding)."""

    def __init__(self, model_path: Path, threads: int, batch_size: int,
                 provider: str = CPU, optimisation: str = "runtime") -> None:
        options = ort_options(threads, optimisation)
        data = Path(model_path).read_bytes()
        if provider == CPU:
            session, used = open_session(data, options, "cpu", model_path)
        else:  # pin one GPU provider (open_session would pick the best one itself)
            chain = [provider, CUDA, CPU] if provider == TENSORRT else [provider, CPU]
            session = ort.InferenceSession(data, options, providers=chain)
            used = session.get_providers()[0]
            if used != provider:
                raise RuntimeError(f"{provider} fell back to {used}")
        self.threads, self.provider = threads, used
        self.runner = SliceRunner(session, used, batch_size)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)
