"""onnxruntime session settings and the batched slice loop.

The settings were chosen by measurement on CPU with the ``small`` U-Net (see
docs/runtime.md): full graph optimisation, sequential execution (a U-Net is a
chain; parallel execution only adds scheduling), one intra-op thread per
*physical* core (hyper-threads share the FPU and slow convolutions down), no
spin-waiting, and the memory arena plus memory-pattern planning, which reuse
buffers between equally shaped batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.providers import CPU

#: progress(done, total) in slices.
Progress = Callable[[int, int], None]


def physical_cores() -> int:
    """Physical cores this process may use (Linux: from /proc/cpuinfo and the affinity mask)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    logical = usable or os.cpu_count() or 1
    cores = _cpuinfo_cores()
    if cores and (os.cpu_count() or 0) > cores:  # hyper-threading: scale the usable share
        logical = max(1, logical * cores // (os.cpu_count() or cores))
    return max(1, logical)


def _cpuinfo_cores() -> int | None:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return None
    pairs, physical = set(), "0"
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            pairs.add((physical, value.strip()))
    return len(pairs) or None


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options for inference; `threads` defaults to the physical cores."""
    if threads is not None and threads < 1:
        raise InputError(None, f"--threads must be at least 1 (got {threads})")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    # No busy-waiting between operators: on a loaded machine (training next door, CI)
    # spinning threads steal the cores the convolutions need (measured 25-35% slower).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    return options


class SliceRunner:
    """Runs (Z, C, H, W) slice stacks through a session in batches, into one preallocated array.

    IO binding hands ORT the input batch and the output's slice of the result
    array directly: no per-batch allocation or copy on the CPU, and on a GPU a
    single host<->device transfer per batch.
    """

    def __init__(self, session: ort.InferenceSession, provider: str, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise InputError(None, f"--batch-size must be at least 1 (got {batch_size})")
        self.session = session
        self.provider = provider
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape, self.output_shape = inp.shape, out.shape
        extra = session.get_outputs()[1:2]
        #: The model's second output (the bottleneck's activations), if it has one: fetched
        #: only for the slices asked for (`run_collecting`), never otherwise.
        self.features_name: str | None = extra[0].name if extra else None
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        #: A model exported with a fixed batch size gets exactly that many slices per run.
        self.fixed_batch = fixed
        self.batch_size = fixed or batch_size

    def run(self, slices: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Network output for every slice, (Z, 1, H, W) float32."""
        return self.run_collecting(slices, (), progress)[0]

    def run_collecting(self, slices: np.ndarray, keep: Sequence[int],
                       progress: Progress | None = None
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Network output for every slice, and the second output (the feature maps) of the
        slices `keep`, in that order, from the same pass (None without a second output or
        with no `keep`). Batches without a kept slice fetch the first output only."""
        slices = np.ascontiguousarray(slices, dtype=np.float32)
        z = slices.shape[0]
        out = np.empty((z, 1, *slices.shape[2:]), dtype=np.float32)
        keep = [int(i) for i in keep] if self.features_name else []
        kept: dict[int, np.ndarray] = {}
        binding = self.session.io_binding()
        step = self.batch_size
        for start in range(0, z, step):
            stop = min(start + step, z)
            batch, target = slices[start:stop], out[start:stop]
            if self.fixed_batch and stop - start < self.fixed_batch:
                batch, target = self._filled(batch), None
            wanted = [i for i in keep if start <= i < stop]
            binding.clear_binding_outputs()
            binding.bind_cpu_input(self.input_name, batch)
            if target is not None and self.provider == CPU:
                # ORT writes straight into the result array.
                binding.bind_ortvalue_output(self.output_name,
                                             ort.OrtValue.ortvalue_from_numpy(target))
            else:
                binding.bind_output(self.output_name)
            if wanted:
                binding.bind_output(str(self.features_name))
            self.session.run_with_iobinding(binding)
            direct = target is not None and self.provider == CPU
            if wanted or not direct:
                results = binding.copy_outputs_to_cpu()  # binding order: image, features
                if not direct:
                    out[start:stop] = results[0][: stop - start]
                if wanted:
                    kept.update((i, results[1][i - start]) for i in wanted)
            if progress is not None:
                progress(stop, z)
        features = np.stack([kept[i] for i in keep]) if keep else None
        return out, features

    def warm_up(self, channels: int, height: int, width: int) -> None:
        """Run one full batch of background slices: builds or loads a TensorRT engine now."""
        batch = np.full((self.batch_size, channels, height, width), -1.0, np.float32)
        self.run(batch)

    def _filled(self, batch: np.ndarray) -> np.ndarray:
        """Pad a short last batch to a fixed batch size by repeating its last slice."""
        extra = np.repeat(batch[-1:], self.fixed_batch - batch.shape[0], axis=0)
        return np.ascontiguousarray(np.concatenate([batch, extra]))
