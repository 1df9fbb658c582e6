"""TensorRT provider options that cannot go silently wrong: one engine per model, shape profiles.

Why each option is set:

- **Engine cache prefix per model.** onnxruntime names cached engines after the
  graph's structure and names, not its weights, and a model passed as bytes has
  no file name: two models of the same preset would share an engine, and the
  second would silently produce the first one's output (onnxruntime issues
  #6455, #32254). The prefix is the sha256 of the model bytes plus the
  onnxruntime and TensorRT versions, the precision and the shape profile.
- **Shape profiles.** Without them TensorRT builds a new engine for every new
  batch or slice size (minutes each). The profile covers batch 1..batch size at
  the padded slice size of the volume, so the short last batch is covered too.
  The slice size is part of the prefix: two sizes never overwrite one
  another's engine (onnxruntime rebuilds a cached engine whose profile does not
  cover the input, which would make a mixed cohort rebuild on every switch).
- **A cache folder that exists.** It is created here; an unusable folder is a
  clear error, not a provider that fails to start.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError

#: Build times measured on this machine, per model shape (for the "~N s" announcement).
BUILD_TIMES = "build-times.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mri2mri/tensorrt`` (``~/.cache/mri2mri/tensorrt`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mri2mri" / "tensorrt"


def resolve_cache_dir(cache: bool | str | Path) -> Path | None:
    """`True` -> the default folder, a path -> that folder, `False` -> no engine cache."""
    if cache is True:
        return default_cache_dir()
    if cache is False or cache is None:
        return None
    return Path(cache).expanduser()


def ensure_cache_dir(path: Path) -> Path:
    """Create the cache folder (onnxruntime does not create missing parents) and check it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create the TensorRT engine cache folder "
                               f"({exc.strerror or exc}); use --no-trt-cache") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, "the TensorRT engine cache folder is not writable; "
                               "use --no-trt-cache")
    return path


def tensorrt_version() -> str | None:
    """Version of the TensorRT library onnxruntime will load (``10.3.0``), or None if absent.

    Asked of the library itself (``getInferLibVersion``), by the soname the
    provider links to: once onnxruntime has loaded it, this is the same library.
    """
    if _FOUND:
        return _FOUND[0]
    for name in _nvinfer_names():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        code = int(lib.getInferLibVersion())
        if code >= 10000:  # TensorRT 10+: major * 10000 + minor * 100 + patch
            _FOUND.append(f"{code // 10000}.{code // 100 % 100}.{code % 100}")
        else:  # TensorRT 8: major * 1000 + minor * 100 + patch
            _FOUND.append(f"{code // 1000}.{code // 100 % 10}.{code % 100}")
        return _FOUND[0]
    return None  # not cached: the library may be loaded later (onnxruntime, preload)


#: The TensorRT version once found (it cannot change within a process).
_FOUND: list[str] = []


@functools.cache
def _nvinfer_names() -> list[str]:
    """The ``libnvinfer.so.N`` this onnxruntime's TensorRT provider is linked against."""
    names = []
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    if library.is_file():
        names = sorted({m.decode() for m in
                        re.findall(rb"libnvinfer\.so\.\d+", library.read_bytes())})
    return names or ["libnvinfer.so.10", "libnvinfer.so"]


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation profile: batch `min_batch`..`max_batch` of C x H x W slices."""

    input_name: str
    channels: int
    height: int
    width: int
    min_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if any(c in self.input_name for c in ":,"):
            raise ValueError(f"input name {self.input_name!r} cannot go into a TensorRT profile")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(f"bad batch range {self.min_batch}..{self.max_batch}")

    def options(self) -> dict[str, str]:
        """``trt_profile_{min,opt,max}_shapes``: optimised for full batches."""
        dims = f"{self.channels}x{self.height}x{self.width}"
        return {"trt_profile_min_shapes": f"{self.input_name}:{self.min_batch}x{dims}",
                "trt_profile_opt_shapes": f"{self.input_name}:{self.max_batch}x{dims}",
                "trt_profile_max_shapes": f"{self.input_name}:{self.max_batch}x{dims}"}

    @property
    def label(self) -> str:
        return f"{self.height}x{self.width}, batch {self.min_batch}-{self.max_batch}"


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def model_digest(model: bytes) -> str:
    """sha256 of the model bytes: what tells two models of the same architecture apart."""
    return hashlib.sha256(model).hexdigest()


def engine_prefix(digest: str, profile: ShapeProfile, fp16: bool) -> str:
    """A cache prefix unique to the model (`model_digest`), versions, precision and profile."""
    parts = ["mri2mri", digest, f"ort{_token(ort.__version__)}",
             f"trt{_token(tensorrt_version() or 'unknown')}", "fp16" if fp16 else "fp32",
             f"{profile.channels}c{profile.height}x{profile.width}",
             f"b{profile.min_batch}to{profile.max_batch}"]
    return "_".join(parts)


def tensorrt_options(digest: str, profile: ShapeProfile, *, fp16: bool,
                     cache_dir: Path | None) -> dict[str, object]:
    """TensorRT provider options for the model with this `model_digest`, run at `profile`.

    `cache_dir` None: no engine cache.

    `fp16` lets TensorRT pick half-precision kernels: set for models exported
    with ``--fp16`` only, so an fp32 model never changes precision behind the user's back.
    """
    options: dict[str, object] = {"trt_fp16_enable": fp16, **profile.options()}
    if cache_dir is None:
        options["trt_engine_cache_enable"] = False
        return options
    folder = str(ensure_cache_dir(cache_dir))
    options.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": folder,
                    "trt_engine_cache_prefix": engine_prefix(digest, profile, fp16),
                    # Tactic timings (per GPU, not per weights): speeds up later builds.
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": folder})
    return options


def is_cached(options: dict[str, object]) -> bool:
    """Whether an engine with these options' prefix is already in the cache folder."""
    if not options.get("trt_engine_cache_enable"):
        return False
    folder = Path(str(options["trt_engine_cache_path"]))
    return any(folder.glob(f"{options['trt_engine_cache_prefix']}*.engine"))


def build_key(preset: str, profile: ShapeProfile, fp16: bool) -> str:
    """What an engine's build time depends on: architecture and shapes, not the weights."""
    return (f"{preset}|{profile.channels}x{profile.height}x{profile.width}|"
            f"b{profile.min_batch}-{profile.max_batch}|{'fp16' if fp16 else 'fp32'}|"
            f"ort{ort.__version__}|trt{tensorrt_version()}")


def _history(cache_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((cache_dir / BUILD_TIMES).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def announcement(cache_dir: Path | None, key: str, profile: ShapeProfile) -> str:
    """The line shown before an engine is built, with an estimate from earlier builds here."""
    seconds = _history(cache_dir).get(key) if cache_dir is not None else None
    estimate = (f"~{seconds:.0f} s (last build on this machine)" if seconds is not None
                else "no earlier build here to estimate from; often minutes")
    where = (f"cached in {cache_dir}" if cache_dir is not None
             else "engine cache off: rebuilt in every run")
    return (f"building TensorRT engine for {profile.label}, once per model and GPU "
            f"({where}): {estimate}")


def record_build(cache_dir: Path | None, key: str, seconds: float) -> None:
    """Remember how long a build took, for the next announcement (best effort)."""
    if cache_dir is None:
        return
    history = _history(cache_dir)
    history[key] = round(seconds, 1)
    try:
        write_json(cache_dir / BUILD_TIMES, history, sort_keys=True)
    except OSError:
        pass  # the estimate is a courtesy; a read-only cache must not fail a run
