"""``--set KEY=VALUE``: a training recipe as TrainConfig's defaults plus named changes.

A benchmark that trains must say exactly which recipe it tested; naming
TrainConfig's own fields (rather than a second set of options) keeps the two in
step: a field added to TrainConfig can be set here at once.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any

from mri2mri.runtime.core.errors import InputError
from mri2mri.train.config import TrainConfig

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


def _convert(text: str, kind: Any) -> Any:
    """`text` as a value of `kind` (int, float, bool, str, list[str] or a union of them)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        arms = typing.get_args(kind)
        if type(None) in arms and text.lower() in _NONE:
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _convert(text, arm)
            except ValueError:
                continue
        raise ValueError(f"not one of {', '.join(getattr(a, '__name__', str(a)) for a in arms)}")
    if typing.get_origin(kind) is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError("not true or false")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"not a{'n' if kind is int else ''} {kind.__name__}") from None
    raise ValueError(f"cannot parse a {kind}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=4", "lr=1e-4", "augment=strong,randomize=0.7"]`` -> typed TrainConfig fields.

    Each value is parsed with its field's type; an unknown field, a value of the
    wrong type or an item without ``=`` is an InputError naming it.
    """
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in fields(TrainConfig)}
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(None, f"--set {item!r}: expected KEY=VALUE")
        if key not in known:
            raise InputError(None, f"--set {item}: {key!r} is not a TrainConfig field (see "
                                   "docs/training.md)")
        try:
            parsed[key] = _convert(text.strip(), hints[key])
        except ValueError as exc:
            raise InputError(None, f"--set {item}: {exc}") from None
    return parsed
