"""mri2mri.demo: the one-command demo, simulate -> train -> export -> synthesize -> report.

It sits above the other layers (data preparation, training, export and the
runtime) and only orchestrates them; `mri2mri-demo` is its command line.
"""

from __future__ import annotations

from .pipeline import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
