"""Pick the onnxruntime execution provider that actually works here, and say why others did not.

onnxruntime-gpu lists the TensorRT and CUDA providers as *available* even where
the CUDA libraries or the GPU are missing; the CUDA provider then quietly runs
on the CPU and writes the reason (a missing ``libcublasLt.so.13``...) to the
process's stderr, where a pipeline never looks. So `open_session` creates the
session on each candidate in turn, keeps the first that really runs on the
requested provider (`session.get_providers()`), and keeps each failed
provider's *real* reason: the exception, plus what onnxruntime's native logger
wrote while the provider started (captured from file descriptor 2).

CUDA and cuDNN installed from pip wheels (``onnxruntime-gpu[cuda,cudnn]``) are
not on the loader's path: `preload_gpu_libraries` runs onnxruntime's own
``preload_dlls()`` once, before the first GPU provider is tried.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.engine.devices import RUNTIME_DEVICES, check_device

DEVICES = RUNTIME_DEVICES
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)

#: Short names for messages, `--verbose` and sidecars.
PROVIDER_NAMES = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}

#: Providers tried for each device, best first.
DEVICE_PROVIDERS = {"auto": (TENSORRT, CUDA, CPU), "tensorrt": (TENSORRT,), "cuda": (CUDA,),
                    "cpu": (CPU,)}

#: CUDA provider options of every CUDA session (and of TensorRT's CUDA fall-back).
#: TF32 off: an fp32 model computes in fp32, as its export parity check did
#: (`mri2mri-export --check-on cuda`); speed comes from an fp16 export instead.
CUDA_OPTIONS: dict[str, str] = {"use_tf32": "0"}

#: Providers that failed to start in this process, with their reason: not retried.
_BROKEN: dict[str, str] = {}
#: What `preload_dlls()` reported (None until it ran).
_PRELOAD_NOTES: list[str] | None = None
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe(provider: str) -> str:
    """A short provider name for messages, e.g. ``CUDA``."""
    return PROVIDER_NAMES.get(provider, provider)


def candidate_providers(device: str) -> list[str]:
    """Providers tried for `device`, best first (whether or not this build has them)."""
    return list(DEVICE_PROVIDERS[check_device(device)])


def preload_gpu_libraries() -> list[str]:
    """Load CUDA/cuDNN from the nvidia pip wheels (``onnxruntime.preload_dlls``) once.

    Returns what it reported (libraries it could not load), for `--verbose`; the
    CUDA provider's own failure, if any, is what decides.
    """
    global _PRELOAD_NOTES
    if _PRELOAD_NOTES is not None:
        return _PRELOAD_NOTES
    notes: list[str] = []
    if not hasattr(ort, "preload_dlls"):
        notes.append(f"onnxruntime {ort.__version__} has no preload_dlls(): CUDA libraries "
                     "must be on the loader path (LD_LIBRARY_PATH)")
    else:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - report, then let the provider decide
                notes.append(f"preload_dlls() failed: {exception_summary(exc)}")
        notes += [_ANSI.sub("", line).strip() for line in printed.getvalue().splitlines()
                  if line.strip()]
        notes += [exception_summary(w.message) for w in caught]
    _PRELOAD_NOTES = notes
    return notes


@contextlib.contextmanager
def native_log() -> Iterator[list[str]]:
    """Collect what onnxruntime's native code writes to stderr (fd 2) inside the block.

    The lines are available after the block. The logger is raised to warnings
    for the duration: onnxruntime explains a CUDA provider that did not start
    ("Require cuDNN 9.* and CUDA 13.*") only as a warning.
    """
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a detached daemon): nothing to capture from
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        ort.set_default_logger_severity(2)
        try:
            yield lines
        finally:
            ort.set_default_logger_severity(3)
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = _ANSI.sub("", sink.read().decode(errors="replace"))
            lines.extend(line for line in text.splitlines() if line.strip())


def _clean(message: str) -> str:
    """An onnxruntime message without its source location, C++ signature or error code."""
    message = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", message.strip())
    message = re.sub(r"^\S+\.(?:cc|cpp|h):\d+\s+(?:[^()]*\([^()]*\)\s+)?", "", message)
    return message.strip()


def failure_reason(exc: BaseException | None, log: list[str]) -> str:
    """One line saying why a provider did not start: the library that failed, then the rest."""
    parts: list[str] = []
    for line in log:
        if match := re.search(r"with error: (.+)$", line):
            parts.append(match.group(1).strip())
        if match := re.search(r"Require (cuDNN \S+ and CUDA [0-9.*]+)", line):
            parts.append(f"onnxruntime {ort.__version__} needs {match.group(1)}")
    if exc is not None:
        parts.append(_clean(exception_summary(exc, limit=10_000)))
    if not parts:  # otherwise the last native error line, whatever it says
        errors = [line for line in log if "[E:" in line]
        if errors:
            parts.append(_clean(errors[-1].split("] ", 1)[-1]))
    unique = list(dict.fromkeys(p.rstrip(".") for p in parts if p))
    reason = "; ".join(unique) or "onnxruntime gave no reason"
    return " ".join(reason.split())[:400]


def _chain(provider: str, provider_options: Mapping[str, Any] | None) -> list[Any]:
    """The provider plus fall-backs for nodes it cannot run (TensorRT -> CUDA -> CPU)."""
    if provider == TENSORRT:
        return [(TENSORRT, dict(provider_options or {})), (CUDA, CUDA_OPTIONS), CPU]
    if provider == CUDA:
        return [(CUDA, CUDA_OPTIONS), CPU]
    return [CPU]


def try_provider(model: bytes, options: ort.SessionOptions, provider: str,
                 provider_options: Mapping[str, Any] | None = None
                 ) -> tuple[ort.InferenceSession | None, str | None]:
    """(session, None) when `provider` really runs the model, else (None, the reason)."""
    if provider not in ort.get_available_providers():
        return None, (f"not in this onnxruntime build ({ort.__version__}); "
                      "install onnxruntime-gpu")
    if provider in GPU_PROVIDERS:
        preload_gpu_libraries()
    session, error = None, None
    with native_log() if provider in GPU_PROVIDERS else contextlib.nullcontext([]) as log:
        try:
            # enable_fallback=0: a provider that fails must raise, not silently retry.
            session = ort.InferenceSession(model, sess_options=options,
                                           providers=_chain(provider, provider_options),
                                           enable_fallback=0)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
            error = exc
    if session is not None and session.get_providers()[0] == provider:
        return session, None
    if provider == CPU:
        raise InputError(None, f"not a usable ONNX model ({failure_reason(error, [])})")
    return None, failure_reason(error, log)


def open_session(model: bytes, options: ort.SessionOptions, device: str = "auto",
                 source: str | Path = "model", *, failures: dict[str, str] | None = None,
                 tensorrt_options: Mapping[str, Any] | None = None,
                 skip: tuple[str, ...] = (), option: str = "--device"
                 ) -> tuple[ort.InferenceSession, str]:
    """Create a session on the best working provider for `device`; return it and the provider.

    ``auto`` tries TensorRT, CUDA, then the CPU; ``tensorrt`` and ``cuda`` try
    only that provider and raise `InputError` naming the cause when it does not
    start (never a silent CPU run). Each provider that did not start is added
    to `failures` (short name -> reason), for `--verbose` and run reports.
    `option` is the command-line option the error message names.
    """
    device = check_device(device)
    failures = failures if failures is not None else {}
    for provider in candidate_providers(device):
        if provider in skip:
            continue
        if provider in _BROKEN:
            failures[describe(provider)] = _BROKEN[provider]
            continue
        try:
            session, reason = try_provider(model, options, provider,
                                           tensorrt_options if provider == TENSORRT else None)
        except InputError as exc:
            raise InputError(source, exc.problem) from None
        if session is not None:
            return session, provider
        failures[describe(provider)] = _BROKEN[provider] = str(reason)
    # Only reached for tensorrt/cuda: tell a broken model apart from a missing GPU.
    try:
        try_provider(model, options, CPU)
    except InputError as exc:
        raise InputError(source, exc.problem) from None
    name = describe(candidate_providers(device)[0])
    instead = "--device cpu or auto" if option == "--device" else f"{option} cpu"
    raise InputError(None, f"{option} {device}: {name} did not start "
                           f"({failures.get(name, 'skipped')}); use {instead}")
