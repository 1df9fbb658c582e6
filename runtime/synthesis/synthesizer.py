"""The synthesis engine: one ONNX session, many NIfTI volumes, no torch.

`Synthesizer` reads the model's embedded `ModelMetadata`, checks the inputs
against it, and runs them through the shared preprocessing path
(`mri2mri.runtime.imaging.preprocess`), so a volume is prepared exactly as in training.
The CLI (`mri2mri-run`) and the benchmarks both use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort

from mri2mri.runtime.core.atomic import check_output_path
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.devices import check_device
from mri2mri.runtime.engine.providers import (
    TENSORRT,
    describe,
    open_session,
    preload_gpu_libraries,
    try_provider,
)
from mri2mri.runtime.engine.session import Progress, SliceRunner, session_options
from mri2mri.runtime.engine.tensorrt import (
    ShapeProfile,
    announcement,
    build_key,
    ensure_cache_dir,
    is_cached,
    model_digest,
    record_build,
    resolve_cache_dir,
    tensorrt_options,
    tensorrt_version,
)
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.nifti import load_volume, save_volume
from mri2mri.runtime.imaging.preprocess import PreparedSources, prepare_sources, restore_image
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.runtime.models.registry import resolve_model
from mri2mri.runtime.synthesis.disagreement import checked_slices
from mri2mri.runtime.synthesis.features import OUTPUT_NAME as FEATURES_OUTPUT

Inputs = Mapping[str, nib.Nifti1Image] | Sequence[nib.Nifti1Image]
FileInputs = Mapping[str, str | Path] | Sequence[str | Path]
#: Called with a subject's prepared (normalised) sources before inference: the
#: out-of-distribution check looks at exactly what the network is given.
Inspect = Callable[[PreparedSources], None]
TENSORRT_DEVICE = "tensorrt"


@dataclass
class NetworkPass:
    """A subject's pass through the network: what a check after inference may look at."""

    prepared: PreparedSources
    #: Every slice's network input (N, C, H, W), context stacked.
    stacks: np.ndarray
    #: Every slice's network output (N, 1, H, W).
    prediction: np.ndarray
    #: The network itself, batched, on the provider the synthesis uses.
    predict: Callable[[np.ndarray], np.ndarray]
    #: The checked slices (`disagreement.checked_slices`) and their feature maps (the
    #: model's second output, (len(feature_slices), C, h, w)) from the same pass; None for
    #: a model without that output.
    feature_slices: np.ndarray | None = None
    features: np.ndarray | None = None
    #: `disagreement.checked_slices` of `prepared`, made once for every check (None: not yet).
    checked: tuple[np.ndarray, np.ndarray] | None = None

    def checked_slices(self) -> tuple[np.ndarray, np.ndarray]:
        """The foreground as padded slices and the slices the model-based checks look at."""
        if self.checked is None:
            self.checked = checked_slices(self.prepared)
        return self.checked


#: Called after inference, before the output is restored; its time is `Timings.ood_check`
#: (the model-based out-of-distribution figures, `mri2mri.runtime.synthesis.disagreement`
#: and `.features`).
Examine = Callable[[NetworkPass], None]


@dataclass
class Timings:
    """Wall-clock seconds per stage of one synthesis (what the benchmarks report)."""

    load: float = 0.0
    preprocess: float = 0.0
    #: Building or loading a TensorRT engine (first volume of a slice size only; else 0).
    engine: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    write: float = 0.0
    #: The out-of-distribution checks after inference (extra network passes), if any.
    ood_check: float = 0.0

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
    """A loaded model: call `synthesize` for each subject.

    The provider is chosen once, when the model is loaded. On CUDA and the CPU
    one session serves every slice size. TensorRT engines are built for a fixed
    shape profile, and the padded slice size is known only per volume, so with
    TensorRT there is one session per padded slice size, opened the first time
    that size is seen (`runner_for`): a cohort of same-sized volumes builds (or
    loads from the engine cache) exactly one engine.
    """

    def __init__(self, model_path: str | Path, device: str = "auto", threads: int | None = None,
                 batch_size: int = 8, *, trt_cache: bool | str | Path = True,
                 notify: Callable[[str], None] | None = None) -> None:
        self.model_path = resolve_model(model_path)  # a file, or a starter model's name
        self.device = check_device(device)
        model = read_model(self.model_path)
        #: sha256 of the model bytes: the model's identity in the TensorRT engine cache.
        self.model_sha256 = model_digest(model)
        self._options = session_options(threads)
        self.threads = self._options.intra_op_num_threads
        self.batch_size = batch_size
        #: Engine cache folder (None: cache off, engines rebuilt in every process).
        self.trt_cache_dir = resolve_cache_dir(trt_cache)
        #: Where announcements go (the first-run TensorRT engine build); stderr by default.
        self.notify = notify or _to_stderr
        #: Providers that did not start, short name -> onnxruntime's reason (for reports).
        self.provider_failures: dict[str, str] = {}
        #: Seconds to build or load the TensorRT engine and run its first batch, per slice size.
        self.engine_seconds: dict[tuple[int, int], float] = {}
        self.session, self.provider = open_session(model, self._options, self.device,
                                                   self.model_path,
                                                   failures=self.provider_failures)
        # TensorRT opens one more session per slice size from these very bytes (a file
        # replaced meanwhile must not be mixed in); other providers need them no more.
        self._model = model if self.provider == TENSORRT else None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ModelMetadata.from_onnx_props(props, str(self.model_path))
        self._check_signature()
        self.runner = SliceRunner(self.session, self.provider, batch_size)
        self._runners: dict[tuple[int, int], SliceRunner] = {}
        if self.provider == TENSORRT and self.trt_cache_dir is not None:
            ensure_cache_dir(self.trt_cache_dir)

    def execution_info(self) -> dict[str, object]:
        """Where and how the network runs, JSON-ready: for run reports and sidecars.

        ``provider_failures`` holds onnxruntime's own reason for each faster
        provider that did not start (or had no engine), so a report can say why
        a run was on the CPU.
        """
        info: dict[str, object] = {
            "device": self.device, "provider": self.provider_name, "precision": self.precision,
            "onnxruntime": ort.__version__, "provider_failures": dict(self.provider_failures)}
        if self.provider == TENSORRT:
            info["tensorrt"] = tensorrt_version()
            info["engine_cache"] = None if self.trt_cache_dir is None else str(self.trt_cache_dir)
            info["engine_seconds"] = {f"{h}x{w}": round(s, 2)
                                      for (h, w), s in self.engine_seconds.items()}
        if self.provider_failures:  # what preload_dlls() could not load, if anything
            info["gpu_library_notes"] = list(preload_gpu_libraries())
        return info

    @property
    def precision(self) -> str:
        """``fp32`` or ``fp16``, as recorded by `mri2mri-export`."""
        return str(self.meta.training.get("export", {}).get("precision", "fp32"))

    def shape_profile(self, height: int, width: int) -> ShapeProfile:
        """The TensorRT profile for slices of this padded size: batch 1..batch size.

        A model exported with a fixed batch gets exactly that batch (the runner
        pads the short last batch); otherwise the profile covers the short last batch.
        """
        fixed = self.runner.fixed_batch
        return ShapeProfile(self.runner.input_name, self.meta.input_channels, height, width,
                            fixed or 1, fixed or self.runner.batch_size)

    def tensorrt_options(self, height: int, width: int) -> dict[str, object]:
        """TensorRT provider options for slices of this size (`mri2mri.runtime.engine.tensorrt`)."""
        return tensorrt_options(self.model_sha256, self.shape_profile(height, width),
                                fp16=self.precision == "fp16", cache_dir=self.trt_cache_dir)

    def runner_for(self, height: int, width: int) -> SliceRunner:
        """The slice runner for this padded slice size (TensorRT: its own engine)."""
        if self.provider != TENSORRT:
            return self.runner
        key = (height, width)
        if key not in self._runners:
            self._runners[key] = self._tensorrt_runner(height, width)
        return self._runners[key]

    def _tensorrt_runner(self, height: int, width: int) -> SliceRunner:
        profile = self.shape_profile(height, width)
        options = self.tensorrt_options(height, width)
        fp16 = self.precision == "fp16"
        key = build_key(self.meta.preset, profile, fp16)
        cached = is_cached(options)
        if not cached:
            self.notify(announcement(self.trt_cache_dir, key, profile))
        start = time.perf_counter()
        assert self._model is not None  # kept whenever the provider is TensorRT
        session, reason = try_provider(self._model, self._options, TENSORRT, options)
        runner = None
        if session is not None:
            runner = SliceRunner(session, TENSORRT, self.batch_size)
            try:
                runner.warm_up(profile.channels, height, width)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
                runner, reason = None, f"engine build failed: {exc}"
        if runner is None:
            return self._without_tensorrt(profile, str(reason))
        seconds = time.perf_counter() - start
        self.engine_seconds[(height, width)] = seconds
        if not cached:
            record_build(self.trt_cache_dir, key, seconds)
        return runner

    def _without_tensorrt(self, profile: ShapeProfile, reason: str) -> SliceRunner:
        """TensorRT has no engine for this size: an error, or (auto) the next provider."""
        reason = " ".join(reason.split())[:400]
        self.provider_failures[describe(TENSORRT)] = f"no engine for {profile.label}: {reason}"
        if self.device == TENSORRT_DEVICE:
            raise InputError(None, f"--device tensorrt: no TensorRT engine for {profile.label} "
                                   f"({reason}); use --device cuda, cpu or auto")
        assert self._model is not None
        self.session, self.provider = open_session(self._model, self._options, self.device,
                                                   self.model_path, skip=(TENSORRT,),
                                                   failures=self.provider_failures)
        self._model = None
        self.runner = SliceRunner(self.session, self.provider, self.batch_size)
        self.notify(f"TensorRT has no engine for {profile.label} ({reason}); "
                    f"running on {self.provider_name}")
        return self.runner

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
        names = [o.name for o in outputs[1:]]
        if len(inputs) != 1 or not 1 <= len(outputs) <= 2 or names not in ([], [FEATURES_OUTPUT]):
            raise InputError(where, f"expected one input and one output (and optionally a "
                                    f"second, {FEATURES_OUTPUT!r}), the graph has "
                                    f"{len(inputs)} and {len(outputs)} ({', '.join(names)})")
        shape = inputs[0].shape
        if len(shape) != 4 or any(len(o.shape) != 4 for o in outputs):
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

    def synthesize(self, inputs: Inputs, *, resample_to_first: bool = False,
                   progress: Progress | None = None, inspect: Inspect | None = None,
                   examine: Examine | None = None) -> nib.Nifti1Image:
        """Synthesize the target contrast on the first source's grid and header."""
        images = self.order_inputs(inputs)
        return self._synthesize(images, list(self.meta.sources),
                                resample_to_first=resample_to_first, progress=progress,
                                inspect=inspect, examine=examine)

    def _synthesize(self, images: Sequence[nib.Nifti1Image], names: Sequence[str], *,
                    resample_to_first: bool, progress: Progress | None,
                    timings: Timings | None = None, inspect: Inspect | None = None,
                    examine: Examine | None = None) -> nib.Nifti1Image:
        timings = timings if timings is not None else Timings()
        start = time.perf_counter()
        prepared = prepare_sources(images, self.meta.geometry, self.meta.normalisation,
                                   names=names, resample_to_first=resample_to_first)
        self._check_slice_size(prepared.slices.shape, names[0])
        if inspect is not None:
            inspect(prepared)
        stacks = stack_context(prepared.slices, self.meta.context)
        mid = time.perf_counter()
        runner = self.runner_for(*stacks.shape[2:])
        # The checks' slices' feature maps come from the same pass (nearly free).
        checked = checked_slices(prepared) if examine is not None else None
        chosen = checked[1] if checked is not None and runner.features_name else None
        ready = time.perf_counter()
        pred, maps = runner.run_collecting(stacks, () if chosen is None else chosen, progress)
        end = time.perf_counter()
        if examine is not None:
            examine(NetworkPass(prepared, stacks, pred, runner.run, chosen, maps, checked))
            timings.ood_check += time.perf_counter() - end
            end = time.perf_counter()
        out = restore_image(pred, prepared, self.meta.normalisation.target_scale,
                            self.description)
        timings.preprocess += mid - start
        timings.engine += ready - mid
        timings.inference += end - ready
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
                        inspect: Inspect | None = None, examine: Examine | None = None
                        ) -> Timings:
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
        out = self._synthesize(images, [str(p) for p in paths],
                               resample_to_first=resample_to_first, progress=progress,
                               timings=timings, inspect=inspect, examine=examine)
        start = time.perf_counter()
        save_volume(out, output, overwrite=overwrite)
        timings.write = time.perf_counter() - start
        return timings

    def _takes_bvals(self, index: int, count: int) -> bool:
        return count == 1 or self.meta.sources[index] == "b0"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthesize(model_path: str | Path, inputs: Inputs, device: str = "auto",
               resample_to_first: bool = False) -> nib.Nifti1Image:
    """One-off convenience: load the model and synthesize one subject."""
    return Synthesizer(model_path, device).synthesize(inputs,
                                                      resample_to_first=resample_to_first)

