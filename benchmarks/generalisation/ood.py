"""The out-of-distribution warning on a benchmark subject: would `mri2mri-run` have warned?

The leave-one-out benchmark reports, beside each held-out subject's PSNR against the
LUT, the model-based disagreement figure of that subject
(`mri2mri.runtime.synthesis.disagreement`, the same definition and slices as the
runtime's check) and the verdict against the threshold the model recorded from its own
validation subjects: the data a threshold is calibrated on.
"""

from __future__ import annotations

from typing import Any

from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.synthesis.disagreement import judge, measure_prepared
from mri2mri.train.inference import predict_slices
from mri2mri.train.prepare import SubjectData

from .evaluate import ScoredRun


def disagreement_verdict(run: ScoredRun, data: SubjectData) -> dict[str, Any]:
    """figure, threshold (None without a recorded reference), flagged, validation_max."""
    inputs = stack_context(data.prepared.slices, run.meta.context)
    figure = measure_prepared(lambda stacks: predict_slices(run.model, stacks),
                              data.prepared, inputs)
    verdict = judge(figure, run.meta.ood)
    return {"figure": verdict.figure, "threshold": verdict.threshold,
            "flagged": verdict.flagged, "validation_max": verdict.validation_max}
