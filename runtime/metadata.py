"""The one schema for model metadata: written by `mri2mri.export`, read by the runtime.

It is stored as a single JSON string under the ONNX `metadata_props` key
``mri2mri`` and, identically, inside training checkpoints, so a model file is
self-describing: which contrasts go in (in which channel order), what comes out,
and how to pre- and post-process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.normalize import DEFAULT_MASK_FRACTION, DEFAULT_PERCENTILE
from mri2mri.runtime.imaging.slicing import SliceGeometry

METADATA_KEY = "mri2mri"
SCHEMA_VERSION = 1
VGG16_WEIGHTS_LICENSE = (
    "Perceptual-loss weights: VGG16 conv1_1 (Simonyan & Zisserman 2014), Oxford VGG, CC BY 4.0. "
    "They are used in training only and are not part of this model's weights."
)


@dataclass
class Normalisation:
    """How intensities were normalised (see `mri2mri.runtime.imaging.normalize`)."""

    method: str = "foreground-percentile"
    percentile: float = DEFAULT_PERCENTILE
    mask_fraction: float = DEFAULT_MASK_FRACTION
    #: Target-contrast intensity that the network's +1 stands for (median over training
    #: subjects): the synthesized image is put back on this scale.
    target_scale: float = 1.0


@dataclass
class ModelMetadata:
    """Everything a runtime needs to use a model, and where the model came from."""

    sources: list[str]
    target: str
    normalisation: Normalisation = field(default_factory=Normalisation)
    slice_axis: str = "axial"
    pad_multiple: int = 16
    min_size: int = 0
    #: 2.5D input: the network sees `context` neighbouring slices on each side of a
    #: slice, per source, as extra channels (see `mri2mri.runtime.imaging.slicing.stack_context`).
    context: int = 0
    preset: str = "small"
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: What the training inputs looked like (`mri2mri.runtime.synthesis.ood.combine_summaries`): the
    #: run-time "unlike the training data" check compares each input with it. Empty for
    #: models exported before it existed (the check is then reported as not done).
    training_summary: dict[str, Any] = field(default_factory=dict)
    package_version: str = "0+unknown"
    weights_license: str = VGG16_WEIGHTS_LICENSE
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.sources = [canonical_contrast(s) for s in self.sources]
        self.target = canonical_contrast(self.target)
        if not self.sources:
            raise ValueError("a model needs at least one source contrast")
        if isinstance(self.normalisation, dict):
            self.normalisation = Normalisation(**self.normalisation)
        if not isinstance(self.context, int) or self.context < 0:
            raise ValueError(f"context must be a whole number >= 0 (got {self.context!r})")

    @property
    def task(self) -> str:
        """Human-readable task, e.g. ``T1w+T2w->PDw``."""
        return "+".join(self.sources) + "->" + self.target

    @property
    def input_channels(self) -> int:
        """Channels of the network input: each source with its context slices."""
        return len(self.sources) * (2 * self.context + 1)

    @property
    def geometry(self) -> SliceGeometry:
        return SliceGeometry(self.pad_multiple, self.min_size)

    def to_json(self) -> str:
        data = asdict(self)
        data["task"] = self.task
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"mri2mri metadata is not valid JSON ({exc})") from None
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(source, f"mri2mri metadata schema {version} is not supported "
                                     f"(this version reads schema {SCHEMA_VERSION})")
        data.pop("task", None)
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise InputError(source, f"mri2mri metadata is incomplete ({exc})") from None

    def to_onnx_props(self) -> dict[str, str]:
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_onnx_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        if METADATA_KEY not in props:
            raise InputError(source, "ONNX model has no mri2mri metadata "
                                     "(was it written by mri2mri-export?)")
        return cls.from_json(props[METADATA_KEY], source)
