"""Which trained models to warn about before registering through them (`--via`).

Why: the registration benchmark (docs/registration.md) compares registering through a
model's synthesized image with registering directly, and some training recipes or
data made `via` worse than direct. A model file says how it was trained
(`ModelMetadata.training`: `augment`, `context`, `data`, ...), so `mri2mri-register
--via` can say so before the user trusts the result.

`VIA_RECIPE_RULES` is the table of those findings, filled from the benchmark's
results. A rule matches a model when every one of its conditions holds; the first
matching rule's warning is given. A condition is ``(path, operator, value)``:

- `path`: a dotted path into the metadata, e.g. ``"context"``,
  ``"training.augment.randomize"``, ``"training.data"``, ``"target"``; a path the
  model does not have (an older model, another recipe) reads as None;
- `operator`: one of `OPERATORS`: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (None never
  orders, so an ordering test on a missing field does not match), ``in`` and
  ``not in`` (`value` is then a tuple).

Example, for a finding that models trained without contrast randomisation did worse
than direct registration on another scanner's b=0::

    RecipeRule(conditions=(("target", "==", "T1w"), ("training.augment.randomize", "==", 0.0)),
               warning="trained without contrast randomisation: ...")
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mri2mri.runtime.metadata import ModelMetadata

#: Condition operators by name.
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
    "in": lambda have, values: have in values,
    "not in": lambda have, values: have not in values,
}


@dataclass(frozen=True)
class RecipeRule:
    """Models whose metadata satisfy all `conditions` get `warning` (one line, no file name)."""

    conditions: tuple[tuple[str, str, Any], ...]
    warning: str

    def __post_init__(self) -> None:
        for path, op, _ in self.conditions:
            if op not in OPERATORS:
                raise ValueError(f"recipe rule on {path!r}: unknown operator {op!r}; "
                                 f"use {', '.join(OPERATORS)}")

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return all(_holds(lookup(fields, path), op, value)
                   for path, op, value in self.conditions)


#: The benchmark's findings: recipes with which `via` did worse than direct registration.
#: Empty until the benchmark's results are in (the lead fills it; see the module docstring).
VIA_RECIPE_RULES: tuple[RecipeRule, ...] = ()


def lookup(fields: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of nested mappings, or None where the path ends early."""
    value: Any = fields
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _holds(have: Any, op: str, value: Any) -> bool:
    try:
        return bool(OPERATORS[op](have, value))
    except TypeError:  # None (a missing field) or mixed types do not order
        return False


def via_recipe_warning(meta: ModelMetadata,
                       rules: Sequence[RecipeRule] | None = None) -> str | None:
    """The warning of the first rule (of `rules`, default `VIA_RECIPE_RULES`) the model matches."""
    fields = asdict(meta)
    for rule in VIA_RECIPE_RULES if rules is None else rules:
        if rule.matches(fields):
            return rule.warning
    return None
