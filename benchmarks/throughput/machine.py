"""Name the machine a result came from: CPU model, cores, load, library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mri2mri.runtime.engine.session import physical_cores


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (or the platform's guess elsewhere)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """Everything RESULTS.md prints about where the numbers were measured."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpu": gpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "platform": platform.platform(),
    }
