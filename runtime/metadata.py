"""The one schema for model metadata: written by `mri2mri.export`, read by the runtime.

It is stored as a single JSON string under the ONNX `metadata_props` key
``mri2mri`` and, identically, inside training checkpoints, so a model file is
self-describing: which contrasts go in (in which channel order), what comes out,
and how to pre- and post-process. The dataclasses below are the declaration; its
JSON Schema (`metadata_schema`, published as ``docs/model-metadata.schema.json``)
and the reader's checks are derived from them (`mri2mri.runtime.core.schema`).

How `ModelMetadata.from_json` treats metadata this version does not fully know:

- another ``schema_version``: an `InputError` (the format changed incompatibly);
- a declared field of the wrong JSON type: an `InputError`;
- keys missing (a model written before they existed): their defaults, silently;
- an unknown key inside ``normalisation``, or any other section this module declares
  as a closed dataclass: an `InputError`. These sections say how to feed the network
  and how to put its output back on scale; running while ignoring part of them would
  give wrong images without a word;
- an unknown top-level key: an `InputWarning`, and the model runs. The top level is
  open by contract: a key added there only describes (provenance, notes). A version
  that adds something the runtime must apply puts it in a closed section, or raises
  ``schema_version``.

Both messages name the model file, the keys, the mri2mri version that wrote the model
and the one running, and say "upgrade mri2mri" when the writer is newer.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from mri2mri.runtime import __version__
from mri2mri.runtime.core.errors import InputError, InputWarning
from mri2mri.runtime.core.schema import described, json_schema, mismatches
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.normalize import (
    DEFAULT_MASK_FRACTION,
    DEFAULT_PERCENTILE,
    MEDIAN_MULTIPLE,
)
from mri2mri.runtime.imaging.slicing import SliceGeometry

METADATA_KEY = "mri2mri"
SCHEMA_VERSION = 1
VGG16_WEIGHTS_LICENSE = (
    "Perceptual-loss weights: VGG16 conv1_1 (Simonyan & Zisserman 2014), Oxford VGG, CC BY 4.0. "
    "They are used in training only and are not part of this model's weights."
)
#: Written into the JSON next to the fields, derived from them (ignored when read).
DERIVED = {"task": "Sources and target, e.g. T1w+T2w->PDw (derived from them; not read)."}


#: Normalisation methods: the anchor statistic of the foreground (`percentile`).
NORMALISATION_METHODS = ("foreground-percentile", "foreground-median")


@dataclass
class Normalisation:
    """How intensities were normalised (see `mri2mri.runtime.imaging.normalize`).

    The defaults are the percentile anchor (training's default, and that of every model
    written before the median anchor existed, whose metadata has no `multiple`);
    `median_anchored` is ``mri2mri-train --normalisation median``.
    """

    method: str = described(f"Normalisation method: {' or '.join(NORMALISATION_METHODS)}.",
                            default="foreground-percentile")
    percentile: float = described("Percentile of the foreground intensities that, times "
                                  "'multiple', is mapped to 1.", default=DEFAULT_PERCENTILE)
    mask_fraction: float = described("Foreground: voxels above this fraction of the robust "
                                     "maximum.", default=DEFAULT_MASK_FRACTION)
    target_scale: float = described(
        "Target-contrast intensity that the network's +1 stands for (median over training "
        "subjects): the synthesized image is put back on this scale.", default=1.0)
    multiple: float = described("The intensity mapped to 1 is this multiple of the "
                                "percentile.", default=1.0)

    def __post_init__(self) -> None:
        if self.method not in NORMALISATION_METHODS:
            raise ValueError(f"unknown normalisation method {self.method!r} (known: "
                             f"{', '.join(NORMALISATION_METHODS)})")
        if self.method == "foreground-median" and self.percentile != 50:
            raise ValueError("foreground-median normalisation anchors at percentile 50 "
                             f"(got {self.percentile})")
        if not 0 < self.percentile <= 100 or not self.multiple > 0:
            raise ValueError("normalisation percentile must be in (0, 100] and multiple > 0 "
                             f"(got {self.percentile}, {self.multiple})")

    @classmethod
    def median_anchored(cls) -> Normalisation:
        """`MEDIAN_MULTIPLE` x the foreground median maps to 1 (`--normalisation median`)."""
        return cls(method="foreground-median", percentile=50.0, multiple=MEDIAN_MULTIPLE)

    @classmethod
    def named(cls, name: str) -> Normalisation:
        """`percentile` (the 99.5th percentile: the default) or `median`."""
        if name == "median":
            return cls.median_anchored()
        if name == "percentile":
            return cls()
        raise ValueError(f"normalisation must be median or percentile (got {name!r})")


@dataclass
class ModelMetadata:
    """Everything a runtime needs to use a model, and where the model came from."""

    sources: list[str] = described("Source contrasts, in the network's channel order.")
    target: str = described("The contrast the model synthesizes.")
    normalisation: Normalisation = described(
        "How intensities are normalised; unknown keys here are an error.",
        default_factory=Normalisation)
    slice_axis: str = described("Axis of the 2D slices.", default="axial")
    pad_multiple: int = described("Slices are padded to a multiple of this.", default=16)
    min_size: int = described("Slices are padded to at least this size.", default=0)
    context: int = described(
        "2.5D input: the network sees this many neighbouring slices on each side of a "
        "slice, per source, as extra channels (mri2mri.runtime.imaging.slicing.stack_context).",
        default=0)
    preset: str = described("Network size preset.", default="small")
    architecture: dict[str, Any] = described("The network's configuration.",
                                             default_factory=dict)
    training: dict[str, Any] = described("Provenance: data, seed, epochs, validation metrics, "
                                         "export settings.", default_factory=dict)
    training_summary: dict[str, Any] = described(
        "What the training inputs looked like (mri2mri.runtime.synthesis.ood): the run-time "
        "'unlike the training data' check compares each input with it. Empty for models "
        "exported before it existed (the check is then reported as not done).",
        default_factory=dict)
    ood: dict[str, Any] = described(
        "Model-based out-of-distribution references: under 'disagreement', the validation "
        "subjects' figures of mri2mri.runtime.synthesis.disagreement and the threshold "
        "mri2mri-run flags above; under 'features', the bottleneck-feature statistics of the "
        "training and validation subjects and their augmented draws "
        "(mri2mri.runtime.synthesis.features), their leave-one-out figures and threshold; "
        "under 'contrast', the direction that tells the source contrast from the target "
        "given in its place (mri2mri.runtime.synthesis.contrast); under 'histogram', the "
        "model's own intensity-distance threshold (mri2mri.runtime.synthesis.ood; absent: "
        "0.30). A model-based check "
        "missing here (models trained before it existed) is reported as not judged.",
        default_factory=dict)
    package_version: str = described("The mri2mri version that wrote the model.",
                                     default="0+unknown")
    weights_license: str = described("Licence note on weights used in training.",
                                     default=VGG16_WEIGHTS_LICENSE)
    schema_version: int = described("Version of this schema; another one is not read.",
                                     default=SCHEMA_VERSION)

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
        """Read the metadata JSON of model file `source` (the rules: the module docstring)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"mri2mri metadata is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(source, "mri2mri metadata is not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(source, f"mri2mri metadata schema {version} is not supported "
                                     f"(this version reads schema {SCHEMA_VERSION})")
        data = {k: v for k, v in data.items() if k not in DERIVED}
        _check_fields(data, source)
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
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


#: The classes whose unknown keys are tolerated (a warning): the top level only.
OPEN_CLASSES: tuple[type, ...] = (ModelMetadata,)


def _release(version: Any) -> tuple[int, ...] | None:
    """The release numbers of a version string (``0.2.0.dev1`` -> (0, 2, 0)); None if unknown."""
    match = re.match(r"(\d+(?:\.\d+)*)", str(version))
    if match is None or "unknown" in str(version):
        return None
    numbers = [int(n) for n in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def written_by_newer(written: Any, running: str = __version__) -> bool:
    """Whether version `written` is a later release than `running` (False if either is unknown)."""
    a, b = _release(written), _release(running)
    return a is not None and b is not None and a > b


def _check_fields(data: dict[str, Any], source: str) -> None:
    """Apply the module's rules on unknown keys and wrong types to `data` (parsed JSON)."""
    found = mismatches(ModelMetadata, data, OPEN_CLASSES)
    wrong = [f"{m.path} is {m.got}, expected {m.expected}" for m in found if not m.unknown]
    if wrong:
        raise InputError(source, f"mri2mri metadata: {'; '.join(wrong)}")
    written = data.get("package_version", "0+unknown")
    versions = f"this model was written by mri2mri {written}, you run {__version__}"
    upgrade = "; upgrade mri2mri" if written_by_newer(written) else ""
    needed = [m.path for m in found if not m.tolerated]
    if needed:
        raise InputError(source, f"{versions}; unknown fields the runtime needs to run it "
                                 f"correctly: {', '.join(needed)}{upgrade}")
    ignored = [m.path for m in found if m.tolerated]
    if ignored:
        warnings.warn(InputWarning(source, f"{versions}; unknown fields, ignored: "
                                           f"{', '.join(ignored)}{upgrade}"), stacklevel=3)


def metadata_schema() -> dict[str, Any]:
    """The JSON Schema of the metadata JSON (``docs/model-metadata.schema.json``)."""
    schema = json_schema(ModelMetadata, OPEN_CLASSES)
    schema["title"] = "mri2mri model metadata"
    schema["description"] = (
        f"The JSON under the ONNX metadata_props key {METADATA_KEY!r} (and in training "
        f"checkpoints), schema_version {SCHEMA_VERSION}. Unknown top-level keys are read with "
        "a warning; unknown keys in normalisation are an error (mri2mri.runtime.metadata).")
    for key, description in DERIVED.items():
        schema["properties"][key] = {"description": description, "type": "string"}
    return schema


def schema_text() -> str:
    """`metadata_schema` as the published file holds it."""
    return json.dumps(metadata_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m mri2mri.runtime.metadata --schema``: print the JSON Schema."""
    if (sys.argv[1:] if argv is None else argv) != ["--schema"]:
        sys.exit("usage: python -m mri2mri.runtime.metadata --schema")
    sys.stdout.write(schema_text())


if __name__ == "__main__":
    main()
