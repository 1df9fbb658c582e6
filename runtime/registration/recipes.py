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


_B0_TO_T1W = (("target", "==", "T1w"), ("sources", "==", ["b0"]))
_SEE = "see docs/registration.md, 'Where registration is hard'"

#: The benchmark's findings (docs/registration.md, "Where registration is hard"): recipes
#: and training data with which `via` did worse than direct registration. Known-truth
#: translation errors, via vs direct, DIPY `fast`, motion seed 0.
VIA_RECIPE_RULES: tuple[RecipeRule, ...] = (
    RecipeRule(_B0_TO_T1W + (("training.data", "==", "mri2mri simulated demo cohort"),),
               "trained on the skull-free demo cohort: registering through it was worse than "
               "direct registration on that cohort (0.107 vs 0.078 mm) and on real anatomy "
               f"with an EPI b=0 (0.77 vs 0.53 mm); compare with direct registration ({_SEE})"),
    RecipeRule(_B0_TO_T1W + (("training.data", "==",
                              "mri2mri simulated demo cohort (head, EPI b=0)"),),
               "trained on the simulated head with EPI b=0: registering through it was worse "
               "than direct registration on that cohort (0.12-0.13 vs 0.07 mm) and on real "
               "anatomy (0.8-1.2 vs 0.53 mm; one subject 45 degrees off with the automatic "
               f"mask); compare with direct registration ({_SEE})"),
    RecipeRule(_B0_TO_T1W,
               "no b=0 -> T1w model measured so far made registration better than direct "
               "registration (simulated and real anatomy, default and augmented recipes); "
               f"compare with direct registration and check the QC report ({_SEE})"),
)


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
