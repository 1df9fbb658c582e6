"""The out-of-distribution checks of one synthesis, hooked into the synthesizer.

Three checks, recorded side by side (sidecar ``OutOfDistribution``, QC report, warnings):

- the input's foreground histogram against the training summary
  (`mri2mri.runtime.synthesis.ood`): before inference, nearly free;
- the model's disagreement with itself under small input changes
  (`mri2mri.runtime.synthesis.disagreement`): after inference, on the network's own
  output, three extra passes over at most 16 slices;
- the network's bottleneck features against its training subjects'
  (`mri2mri.runtime.synthesis.features`): the same slices' feature maps, fetched in the
  synthesis's own pass (nearly free);
- the same features' contrast figure (`mri2mri.runtime.synthesis.contrast`): nearer the
  model's source contrast or the wrong one (its target given in its place)?

The histogram check's threshold is the model's own when it records one
(`mri2mri.runtime.synthesis.ood.recorded_threshold`). The model-based checks are switched
off together with ``--no-ood-check``.

`mri2mri-run` (one subject and BIDS datasets) makes one `OodChecks` per synthesis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mri2mri.runtime.imaging.preprocess import PreparedSources
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.runtime.synthesis import contrast, features
from mri2mri.runtime.synthesis.disagreement import (
    KEY,
    Verdict,
    judge,
    measure_prepared,
)
from mri2mri.runtime.synthesis.ood import (
    Assessment,
    assess,
    recorded_threshold,
    summarize_prepared,
)

if TYPE_CHECKING:  # hints only: the QC report reads `warnings_of` without onnxruntime
    from mri2mri.runtime.synthesis.synthesizer import NetworkPass

SWITCHED_OFF = "switched off (--no-ood-check)"


@dataclass
class OodChecks:
    """One synthesis's checks: pass `inspect` and `examine` to the synthesizer, then read
    `as_dict` (what the sidecar records) and `warnings`."""

    meta: ModelMetadata
    #: Measure the model's disagreement (extra network passes).
    disagreement: bool = True
    #: Overrides the model's recorded disagreement threshold (``--ood-threshold``).
    threshold: float | None = None
    histogram: Assessment | None = None
    verdict: Verdict | None = None
    feature_verdict: features.Verdict | None = None
    contrast_verdict: contrast.Verdict | None = None

    def inspect(self, prepared: PreparedSources) -> None:
        self.histogram = assess(summarize_prepared(prepared, self.meta.sources),
                                self.meta.training_summary, recorded_threshold(self.meta.ood))

    def examine(self, done: NetworkPass) -> None:
        checked = done.checked_slices()
        figure = measure_prepared(done.predict, done.prepared, done.stacks,
                                  prediction=done.prediction, checked=checked)
        self.verdict = judge(figure, self.meta.ood, self.threshold)
        scan = None  # the model has no feature output
        if done.feature_slices is not None:
            mask = checked[0][done.feature_slices]
            scan = np.zeros((0, 0)) if done.features is None \
                else features.measure(done.features, mask)
        self.feature_verdict = features.judge(scan, self.meta.ood)
        self.contrast_verdict = contrast.judge(scan, self.meta.ood)

    @property
    def hooks(self) -> dict[str, Any]:
        """The synthesizer's keyword arguments (``synthesize_file(..., **checks.hooks)``)."""
        return {"inspect": self.inspect, "examine": self.examine if self.disagreement else None}

    def as_dict(self) -> dict[str, Any]:
        """The histogram verdict's fields, and each model-based verdict under its own key."""
        record = self.histogram.as_dict() if self.histogram is not None else {}
        why = SWITCHED_OFF if not self.disagreement else "not measured"
        verdict = self.verdict or Verdict(skipped=why)
        feature_verdict = self.feature_verdict or features.Verdict(skipped=why)
        contrast_verdict = self.contrast_verdict or contrast.Verdict(skipped=why)
        return {**record, KEY: verdict.as_dict(), features.KEY: feature_verdict.as_dict(),
                contrast.KEY: contrast_verdict.as_dict()}

    def warnings(self) -> list[str]:
        return warnings_of(self.as_dict())


def warnings_of(ood: Mapping[str, Any]) -> list[str]:
    """The messages of the checks that flagged an input, from its recorded verdicts."""
    found = [ood.get("message", "")] if ood.get("flagged") else []
    for key in (KEY, features.KEY, contrast.KEY):
        verdict = ood.get(key) or {}
        if verdict.get("flagged"):
            found.append(verdict.get("message", ""))
    return found

