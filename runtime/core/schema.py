"""Dataclasses as a declared schema: their JSON Schema, and a dict checked against them.

The model metadata (`mri2mri.runtime.metadata`) is declared once, as dataclasses;
the published JSON Schema and the reader's checks are both derived from those
fields, so they cannot disagree with the code. A library (pydantic, msgspec) would do
the same with a compiled dependency that the runtime needs nowhere else: the
metadata uses only ``str``, ``int``, ``float``, ``bool``, ``list[...]``,
``dict[str, ...]``, ``Any`` and nested dataclasses, a few lines each here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass
from typing import Any

_SCALARS: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}


def described(description: str, **kwargs: Any) -> Any:
    """A dataclass field with a description (it goes into the JSON Schema)."""
    return dataclasses.field(metadata={"description": description}, **kwargs)


def _default(field: dataclasses.Field) -> Any:
    value = field.default if field.default_factory is MISSING else field.default_factory()
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _type_schema(hint: Any, open_classes: tuple[type, ...]) -> dict[str, Any]:
    if hint is Any:
        return {}
    if dataclasses.is_dataclass(hint):
        return json_schema(hint, open_classes, root=False)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], open_classes)}
    if origin is dict and args[0] is str:
        values = _type_schema(args[1], open_classes)
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    raise TypeError(f"no JSON Schema for {hint!r}")


def json_schema(cls: type, open_classes: tuple[type, ...] = (), *,
                root: bool = True) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of dataclass `cls`, from its fields.

    Fields without a default are required; descriptions come from `described`.
    Objects are closed (``additionalProperties: false``) except the classes in
    `open_classes`, which tolerate keys they do not declare.
    """
    hints = typing.get_type_hints(cls)
    schema: dict[str, Any] = {"title": cls.__name__, "description": (cls.__doc__ or "").strip(),
                              "type": "object", "properties": {}}
    if root:
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    required = []
    for field in dataclasses.fields(cls):
        prop = _type_schema(hints[field.name], open_classes)
        if "description" in field.metadata:
            prop = {**prop, "description": field.metadata["description"]}
        if field.default is MISSING and field.default_factory is MISSING:
            required.append(field.name)
        else:
            prop["default"] = _default(field)
        schema["properties"][field.name] = prop
    schema["required"] = required
    schema["additionalProperties"] = cls in open_classes
    return schema


@dataclass(frozen=True)
class Mismatch:
    """One way a dict differs from its dataclass: an undeclared key, or a wrong type."""

    #: Dotted path of the key, e.g. ``normalisation.percentile``.
    path: str
    #: True: a key the dataclass does not declare; False: a declared key of the wrong type.
    unknown: bool
    #: True when the undeclared key is in one of the `open_classes` (tolerated there).
    tolerated: bool = False
    expected: str = ""
    got: str = ""


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is None:
        return True
    got = _json_type(value)
    return got == kind or (kind == "number" and got == "integer")


def mismatches(cls: type, data: dict[str, Any], open_classes: tuple[type, ...] = (),
               prefix: str = "") -> list[Mismatch]:
    """Where `data` (parsed JSON) departs from dataclass `cls`: keys it does not declare
    (`Mismatch.tolerated` when `cls` is open) and values of the wrong JSON type, nested
    dataclasses included. Missing keys are the constructor's business (defaults)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    found = [Mismatch(prefix + key, unknown=True, tolerated=cls in open_classes)
             for key in data if key not in fields]
    for name in fields & set(data):
        hint, value, path = hints[name], data[name], prefix + name
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            found += mismatches(hint, value, open_classes, path + ".")
            continue
        expected = _type_schema(hint, open_classes)
        if not _fits(value, expected):
            found.append(Mismatch(path, unknown=False, expected=expected["type"],
                                  got=_json_type(value)))
        elif expected.get("type") == "array":
            found += [Mismatch(f"{path}[{i}]", unknown=False, expected=expected["items"]["type"],
                               got=_json_type(item))
                      for i, item in enumerate(value) if not _fits(item, expected["items"])]
    return sorted(found, key=lambda m: m.path)
