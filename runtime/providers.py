"""Pick the onnxruntime execution provider that actually works on this machine.

onnxruntime-gpu lists the TensorRT and CUDA providers as *available* even where the
CUDA libraries or the GPU are missing; it then quietly runs on the CPU. The only
reliable test is to create the session and look at `session.get_providers()`,
so that is what `open_session` does, in order of preference, keeping the first
session that really runs on the requested provider.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import InputError, exception_summary

DEVICES = ("auto", "cuda", "cpu")
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)

#: Short names for messages and `--verbose`.
PROVIDER_NAMES = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}

#: Providers that failed to start in this process: not retried (and not re-logged).
_BROKEN: dict[str, str] = {}


def candidate_providers(device: str) -> list[str]:
    """Providers to try for `device`, best first, among those this onnxruntime build has."""
    if device not in DEVICES:
        raise InputError(None, f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    available = set(ort.get_available_providers())
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return gpu
    return [*gpu, CPU]


def _provider_chain(provider: str) -> list[Any]:
    """The provider plus fall-backs for nodes it cannot run (TensorRT -> CUDA -> CPU)."""
    if provider == TENSORRT:
        cache = Path.home() / ".cache" / "mri2mri" / "tensorrt"
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        return [(TENSORRT, options), CUDA, CPU]
    if provider == CUDA:
        return [CUDA, CPU]
    return [CPU]


def _create(model: bytes, provider: str, options: ort.SessionOptions) -> ort.InferenceSession:
    # enable_fallback=0: a provider that fails must raise, not print a banner and retry.
    return ort.InferenceSession(model, sess_options=options,
                                providers=_provider_chain(provider), enable_fallback=0)


def _short(exc: BaseException) -> str:
    """First line of an onnxruntime error without its ``[ONNXRuntimeError] : 7 : X :`` prefix."""
    return re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "",
                  exception_summary(exc, limit=10_000))[:200]


def open_session(model: bytes, options: ort.SessionOptions, device: str = "auto",
                 source: str | Path = "model") -> tuple[ort.InferenceSession, str]:
    """Create a session on the best working provider for `device`; return it and the provider.

    ``auto`` tries TensorRT, then CUDA, then the CPU; ``cuda`` tries only the GPU
    providers and raises `InputError` when none works (never a silent CPU run).
    """
    candidates = candidate_providers(device)
    failures: dict[str, str] = {}
    for provider in candidates:
        if provider in _BROKEN:
            failures[provider] = _BROKEN[provider]
            continue
        try:
            with _quiet_gpu_probe(provider):
                session = _create(model, provider, options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
            if provider == CPU:
                raise InputError(source, f"not a usable ONNX model ({_short(exc)})") from None
            failures[provider] = _BROKEN[provider] = "failed to start"
            continue
        if session.get_providers()[0] == provider:
            return session, provider
        failures[provider] = _BROKEN[provider] = "failed to start"
    # Only reached for device="cuda": tell a broken model apart from a missing GPU.
    _check_loads_on_cpu(model, options, source)
    tried = "; ".join(f"{PROVIDER_NAMES[p]}: {why}" for p, why in failures.items())
    raise InputError(None, "--device cuda: no working GPU execution provider "
                           f"({tried or 'this onnxruntime build has none'}; a GPU and the "
                           "CUDA/cuDNN libraries are needed); use --device cpu or auto")


def _check_loads_on_cpu(model: bytes, options: ort.SessionOptions, source: str | Path) -> None:
    try:
        _create(model, CPU, options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
        raise InputError(source, f"not a usable ONNX model ({_short(exc)})") from None


class _quiet_gpu_probe:
    """Silence onnxruntime's default logger while a GPU provider is probed.

    A missing CUDA library is an expected outcome of probing, reported by us in
    one line; onnxruntime would otherwise print several error lines to stderr.
    """

    def __init__(self, provider: str) -> None:
        self.active = provider in GPU_PROVIDERS

    def __enter__(self) -> None:
        if self.active:
            ort.set_default_logger_severity(4)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            ort.set_default_logger_severity(3)


def describe(provider: str) -> str:
    """A short provider name for messages, e.g. ``CUDA``."""
    return PROVIDER_NAMES.get(provider, provider)
