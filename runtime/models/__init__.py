"""Starter models shipped in the package, run by name (``mri2mri-run --model T1w-to-T2w``).

This folder holds the ONNX files themselves, their model cards and ``starters.json``;
`registry` reads and writes them. Models trained only on simulated data: a start, not a
substitute for a model trained on one's own scanners (see each model card).
"""

from __future__ import annotations

from .registry import (
    ENV,
    MANIFEST,
    StarterModel,
    add_starter,
    describe,
    list_models,
    models_dir,
    resolve_model,
)

__all__ = ["ENV", "MANIFEST", "StarterModel", "add_starter", "describe", "list_models",
           "models_dir", "resolve_model"]
