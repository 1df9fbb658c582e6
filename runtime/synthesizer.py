"""The synthesis engine: one ONNX session, many NIfTI volumes, no torch.

`Synthesizer` reads the model's embedded `ModelMetadata`, checks the inputs
against it, and runs them through the shared preprocessing path
(`mri2mri.runtime.preprocess`), so a volume is prepared exactly as in training.
The CLI (`mri2mri-run`) and the benchmarks both use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import nibabel as nib

from .atomic import check_output_path
from .contrasts import canonical_contrast
from .errors import InputError
from .metadata import ModelMetadata
from .nifti import load_volume, save_volume
from .preprocess import PreparedSources, prepare_sources, restore_image
from .providers import describe, open_session
from .session import Progress, SliceRunner, session_options
from .slicing import stack_context

Inputs = Mapping[str, nib.Nifti1Image] | Sequence[nib.Nifti1Image]
FileInputs = Mapping[str, str | Path] | Sequence[str | Path]
#: Called with a subject's prepared (normalised) sources before inference: the
#: out-of-distribution check looks at exactly what the network is given.
Inspect = Callable[[PreparedSources], None]


@dataclass
class Timings:
    """Wall-clock seconds per stage of one synthesis (what the benchmarks report)."""

    load: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    write: float = 0.0

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, float]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "total": self.total}


def read_model(path: str | Path) -> bytes:
    """The model file's bytes, with a clear error for a missing or empty file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an ONNX model file")
    data = path.read_bytes()
    if not data:
        raise InputError(path, "model file is empty")
    return data


class Synthesizer:
    """A loaded model: call `synthesize` for each subject; the session is created once."""

    def __init__(self, model_path: str | Path, device: str = "auto", threads: int | None = None,
                 batch_size: int = 8) -> None:
        self.model_path = Path(model_path)
        options = session_options(threads)
        self.threads = options.intra_op_num_threads
        self.session, self.provider = open_session(read_model(self.model_path), options, device,
                                                   self.model_path)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ModelMetadata.from_onnx_props(props, str(self.model_path))
        self._check_signature()
        self.runner = SliceRunner(self.session, self.provider, batch_size)

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def sources(self) -> list[str]:
        return list(self.meta.sources)

    @property
    def target(self) -> str:
        return self.meta.target

    @property
    def provider_name(self) -> str:
        """``TensorRT``, ``CUDA`` or ``CPU``: where the network actually runs."""
        return describe(self.provider)

    @property
    def description(self) -> str:
        """What goes into the output's NIfTI ``descrip`` (at most 79 characters)."""
        return f"mri2mri {self.task} model={self.model_path.name}"[:79]

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        where = self.model_path
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(where, f"expected one input and one output, the graph has "
                                    f"{len(inputs)} and {len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or len(outputs[0].shape) != 4:
            raise InputError(where, f"expected (N, C, H, W) tensors, input shape is {shape}")
        if inputs[0].type != "tensor(float)":
            raise InputError(where, f"expected a float32 input, got {inputs[0].type}")
        channels = shape[1]
        if isinstance(channels, int) and channels != self.meta.input_channels:
            raise InputError(where, f"metadata lists {len(self.meta.sources)} source(s) "
                                    f"({', '.join(self.meta.sources)}) with context "
                                    f"{self.meta.context} ({self.meta.input_channels} channels) "
                                    f"but the network takes {channels} channel(s)")

    # -- inputs -------------------------------------------------------------------------

    def order_inputs(self, inputs: Mapping[str, object] | Sequence[object],
                     labels: Mapping[str, str] | None = None) -> list[object]:
        """Inputs in the model's channel order; names may be aliases (``t1`` -> ``T1w``).

        A sequence is taken in the model's source order. `labels` (contrast ->
        file name) only improves error messages.
        """
        sources = self.meta.sources
        if not isinstance(inputs, Mapping):
            items = list(inputs)
            if len(items) != len(sources):
                raise InputError(self.model_path, f"model {self.task} needs {len(sources)} "
                                 f"input(s) ({', '.join(sources)}), got {len(items)}")
            return items
        by_contrast: dict[str, object] = {}
        for name, value in inputs.items():
            label = (labels or {}).get(name, name)
            try:
                contrast = canonical_contrast(name)
            except ValueError as exc:
                raise InputError(label, str(exc)) from None
            if contrast not in sources:
                raise InputError(label, f"contrast {contrast} is not a source of model "
                                        f"{self.task} (it needs {', '.join(sources)})")
            if contrast in by_contrast:
                raise InputError(label, f"{contrast} given twice")
            by_contrast[contrast] = value
        missing = [s for s in sources if s not in by_contrast]
        if missing:
            raise InputError(self.model_path, f"model {self.task} needs a {', '.join(missing)} "
                             f"input (given: {', '.join(by_contrast) or 'none'})")
        return [by_contrast[s] for s in sources]

    # -- synthesis ----------------------------------------------------------------------

    def synthesize(self, inputs: Inputs, resample_to_first: bool = False,
                   progress: Progress | None = None, inspect: Inspect | None = None
                   ) -> nib.Nifti1Image:
        """Synthesize the target contrast on the first source's grid and header."""
        images = self.order_inputs(inputs)
        return self._synthesize(images, list(self.meta.sources), resample_to_first, progress,
                                inspect=inspect)

    def _synthesize(self, images: Sequence[nib.Nifti1Image], names: Sequence[str],
                    resample_to_first: bool, progress: Progress | None,
                    timings: Timings | None = None, inspect: Inspect | None = None
                    ) -> nib.Nifti1Image:
        timings = timings if timings is not None else Timings()
        start = time.perf_counter()
        prepared = prepare_sources(images, self.meta.geometry, self.meta.normalisation, names,
                                   resample_to_first)
        self._check_slice_size(prepared.slices.shape, names[0])
        if inspect is not None:
            inspect(prepared)
        stacks = stack_context(prepared.slices, self.meta.context)
        mid = time.perf_counter()
        pred = self.runner.run(stacks, progress)
        end = time.perf_counter()
        out = restore_image(pred, prepared, self.meta.normalisation.target_scale,
                            self.description)
        timings.preprocess += mid - start
        timings.inference += end - mid
        timings.postprocess += time.perf_counter() - end
        return out

    def _check_slice_size(self, shape: tuple[int, ...], name: str) -> None:
        model_hw = self.runner.input_shape[2:]
        for got, want in zip(shape[2:], model_hw, strict=True):
            if isinstance(want, int) and want > 0 and got != want:
                raise InputError(name, f"slices pad to {shape[2]}x{shape[3]} but the model "
                                       f"takes only {model_hw[0]}x{model_hw[1]}")

    def synthesize_file(self, inputs: FileInputs, output: str | Path, *,
                        bvals: str | Path | None = None, resample_to_first: bool = False,
                        overwrite: bool = False, progress: Progress | None = None,
                        inspect: Inspect | None = None) -> Timings:
        """Load, synthesize and atomically write one subject; return the time per stage.

        `bvals` belongs to the ``b0`` input (or to the only input of a
        one-source model): a 4D DWI is reduced to the mean of its b=0 volumes.
        """
        output = check_output_path(output, overwrite=overwrite)
        timings = Timings()
        start = time.perf_counter()
        if isinstance(inputs, Mapping):
            labels = {name: str(path) for name, path in inputs.items()}
            paths = [Path(p) for p in self.order_inputs(dict(inputs), labels)]
        else:
            paths = [Path(p) for p in self.order_inputs(list(inputs))]
        if bvals is not None and not any(self._takes_bvals(i, len(paths))
                                         for i in range(len(paths))):
            raise InputError(bvals, f"b-values given but model {self.task} has no b0 input")
        images = [load_volume(p, bvals if self._takes_bvals(i, len(paths)) else None)
                  for i, p in enumerate(paths)]
        timings.load = time.perf_counter() - start
        out = self._synthesize(images, [str(p) for p in paths], resample_to_first, progress,
                               timings, inspect)
        start = time.perf_counter()
        save_volume(out, output, overwrite=overwrite)
        timings.write = time.perf_counter() - start
        return timings

    def _takes_bvals(self, index: int, count: int) -> bool:
        return count == 1 or self.meta.sources[index] == "b0"


def synthesize(model_path: str | Path, inputs: Inputs, device: str = "auto",
               resample_to_first: bool = False) -> nib.Nifti1Image:
    """One-off convenience: load the model and synthesize one subject."""
    return Synthesizer(model_path, device).synthesize(inputs, resample_to_first)

