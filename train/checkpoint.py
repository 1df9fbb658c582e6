"""Training checkpoints, declared: a `Checkpoint` (the model) with its `RunState` (the run).

On disk a checkpoint is a plain dict of tensors, numbers, strings, lists and dicts,
written with `torch.save` and read back with ``torch.load(weights_only=True)`` (no
arbitrary code runs on load): ``format`` and ``format_version`` mark it, and its other
keys are the fields of `Checkpoint` and, for a training run's, of `RunState`, side by
side (`Checkpoint.payload`). `Checkpoint.from_payload` checks them: the format, its
version, no key missing or unknown, each of the declared type. A model-only checkpoint
(no run state: e.g. the benchmarks' seeded networks) exports but does not resume.

Format versions (`FORMAT_VERSION`, raised whenever the declaration changes):

- 1: the same keys, but a run's first process's RNG state also stood alone as ``rng``,
  and checkpoints written before they existed lack ``scaler_state``, ``lut_full``,
  ``rng_ranks`` and the best epoch's ``subset``, which every reader filled in by hand.
  Converted on load (`_from_version_1`): export and resume read them as before.
- 2: every `RunState` field present; ``rng`` gone (``rng_ranks[0]`` is it).
"""

from __future__ import annotations

import pickle
import types
import typing
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.metadata import ModelMetadata

FORMAT = "mri2mri-checkpoint"
FORMAT_VERSION = 2
#: The versions this version reads (older ones converted on load).
READABLE_VERSIONS = (1, 2)


@dataclass
class RunState:
    """A training run after `epoch`: what ``mri2mri-train --resume`` continues from."""

    #: The run's `TrainConfig`, as a dict of its fields.
    train_config: dict[str, Any]
    #: Subject ids per split (train, validation, test).
    split: dict[str, list[str]]
    #: The last epoch trained, 0-based.
    epoch: int
    #: metrics.csv's rows so far.
    history: list[dict[str, Any]]
    #: The best epoch so far (`BestEpoch.to_dict`).
    best: dict[str, Any]
    #: The fitted look-up-table baseline (`IntensityLUT.to_dict`).
    baseline: dict[str, Any]
    #: The LUT baseline's whole-volume validation metrics, once measured.
    lut_full: dict[str, float] | None
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    #: The loss scaler's state ({} when it is off: CPU, fp32, bf16).
    scaler_state: dict[str, Any]
    #: Each process's RNG state at the end of `epoch`, in rank order.
    rng_ranks: list[dict[str, Any]]


@dataclass
class Checkpoint:
    """A model as training saves it: enough to rebuild the network and its preprocessing,
    check an export against it, and (with `run`) resume the run exactly."""

    #: The `ModelMetadata` JSON shared with ONNX export and the runtime.
    metadata: str
    #: The U-Net's `UNetConfig`, as a dict.
    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    #: A few real validation input slices, so export can check ONNX against PyTorch.
    parity_slices: torch.Tensor | None = None
    run: RunState | None = None

    def model_metadata(self, source: str | Path = "checkpoint") -> ModelMetadata:
        """The stored metadata, parsed (errors name `source`)."""
        return ModelMetadata.from_json(self.metadata, str(source))

    def payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes (the tensors themselves, not copies)."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run"}
        if own["parity_slices"] is None:
            del own["parity_slices"]
        run = {} if self.run is None else {f.name: getattr(self.run, f.name)
                                           for f in fields(RunState)}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **own, **run}

    @classmethod
    def from_payload(cls, payload: Any, source: str | Path | None = None) -> Checkpoint:
        """The checkpoint a saved dict holds, converted from older formats; anything else
        is an `InputError` naming `source`."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(source, "not an mri2mri checkpoint (no mri2mri training state in "
                                     "it; was it written by mri2mri-train?)")
        version = payload.get("format_version")
        if version not in READABLE_VERSIONS:
            raise InputError(source, f"checkpoint format {version} is not supported (this "
                                     f"version reads {', '.join(map(str, READABLE_VERSIONS))})")
        if version == 1:
            payload = _from_version_1(payload)
        values = {k: v for k, v in payload.items() if k not in ("format", "format_version")}
        own, run = _fields(cls) - {"run"}, _fields(RunState)
        unknown = sorted(set(values) - own - run)
        if unknown:
            raise InputError(source, f"unknown entries in an mri2mri checkpoint of format "
                                     f"{version}: {', '.join(unknown)}")
        optional = {"parity_slices"} | (run if not run & set(values) else set())
        missing = [k for k in [*own, *run] if k not in values and k not in optional]
        if missing:
            raise InputError(source, f"incomplete mri2mri checkpoint (missing "
                                     f"{', '.join(sorted(missing))})")
        _check_types(values, source)
        run_state = RunState(**{k: values.pop(k) for k in run}) if run & set(values) else None
        return cls(**values, run=run_state)


def _fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _from_version_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A format-1 payload in format 2's layout: ``rng`` into ``rng_ranks`` when a run's
    checkpoint predates it, the entries later writers added filled as readers did."""
    converted = dict(payload)
    rng = converted.pop("rng", None)
    if "train_config" in converted:  # a run's checkpoint (else: model only)
        if not converted.get("rng_ranks") and rng is not None:
            converted["rng_ranks"] = [rng]
        converted["scaler_state"] = converted.get("scaler_state") or {}
        converted.setdefault("lut_full", None)
        if isinstance(converted.get("best"), dict):
            converted["best"] = {"subset": {}, **converted["best"]}
    converted["format_version"] = FORMAT_VERSION
    return converted


def _kinds(hint: Any) -> tuple[type, ...]:
    """The Python types a declared field's values may have (containers by their class)."""
    if isinstance(hint, types.UnionType):
        return tuple(k for arg in typing.get_args(hint) for k in _kinds(arg))
    origin = typing.get_origin(hint)
    return (origin if origin is not None else hint,)


def _check_types(values: dict[str, Any], source: str | Path | None) -> None:
    hints = typing.get_type_hints(Checkpoint) | typing.get_type_hints(RunState)
    wrong = [f"{k} ({type(v).__name__})" for k, v in values.items()
             if not isinstance(v, _kinds(hints[k]))]
    if wrong:
        raise InputError(source, f"mri2mri checkpoint entries of the wrong type: "
                                 f"{', '.join(wrong)}")


def as_checkpoint(value: Checkpoint | dict[str, Any], source: str | Path | None = None
                  ) -> Checkpoint:
    """`value` as a `Checkpoint`: a payload dict (``format`` keys optional: it is then
    taken as this version's) is checked and converted like a file's."""
    if isinstance(value, Checkpoint):
        return value
    if not isinstance(value, dict):
        raise InputError(source, f"not an mri2mri checkpoint ({type(value).__name__})")
    return Checkpoint.from_payload({"format": FORMAT, "format_version": FORMAT_VERSION,
                                    **value}, source)


def save_checkpoint(state: Checkpoint | dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact);
    a payload dict is checked first (`as_checkpoint`)."""
    payload = as_checkpoint(state, path).payload()
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and check a checkpoint file; anything else is an `InputError` naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not a checkpoint (did you mean "
                               f"{path / 'best.pt'}?)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError,
            ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint ({exception_summary(exc)})"
                         ) from None
    return Checkpoint.from_payload(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`read_checkpoint`'s payload dict (the current format's keys), for code that reads
    the entries by name."""
    return read_checkpoint(path, map_location).payload()


def checkpoint_metadata(state: Checkpoint | dict[str, Any], source: str | Path = "checkpoint"
                        ) -> ModelMetadata:
    """The model metadata stored in a loaded checkpoint."""
    if isinstance(state, Checkpoint):
        return state.model_metadata(source)
    return ModelMetadata.from_json(state["metadata"], str(source))
