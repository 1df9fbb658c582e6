"""What a model-based out-of-distribution check says about one input.

The disagreement and feature checks differ in their figure, not in how a verdict is
reported: both flag a figure above a threshold, say why when they cannot judge, and go
into the sidecar as `as_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass
class FigureVerdict:
    """A figure against its threshold (JSON-able with `as_dict`); subclasses name the check."""

    #: How the message names the figure, its decimals, what a flag means and a hint.
    LABEL: ClassVar[str] = "figure"
    DECIMALS: ClassVar[int] = 4
    FLAGGED: ClassVar[str] = "the figure is high"
    HINT: ClassVar[str] = ""

    flagged: bool = False
    figure: float | None = None
    threshold: float | None = None
    #: Slices with foreground that the figure was measured on.
    slices: int = 0
    #: Why there is no verdict ("" when judged).
    skipped: str = ""

    @property
    def checked(self) -> bool:
        return not self.skipped

    @property
    def message(self) -> str:
        if self.figure is None:
            return f"{self.LABEL} not measured ({self.skipped})"
        shown = f"{self.figure:.{self.DECIMALS}f}"
        if self.skipped:
            return f"{self.LABEL} {shown}, not judged ({self.skipped})"
        limit = f"{self.threshold:.{self.DECIMALS}g}"
        if self.flagged:
            return (f"{self.FLAGGED} (figure {shown} > threshold {limit}): the input is "
                    f"probably unlike its training data{self.HINT}; check the output closely")
        return f"{self.LABEL} {shown} <= threshold {limit}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checked": self.checked, "message": self.message}
