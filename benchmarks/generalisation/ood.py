"""The out-of-distribution warnings on a benchmark subject: would `mri2mri-run` have warned?

The leave-one-out benchmark reports, beside each held-out subject's PSNR against the
LUT, the two model-based figures of that subject, each with the verdict against the
threshold the model recorded: the data the thresholds are calibrated on.

- disagreement (`mri2mri.runtime.synthesis.disagreement`): the same definition and
  slices as the runtime's check, threshold from the model's own validation subjects;
- features (`mri2mri.runtime.synthesis.features`): the bottleneck's statistics on the
  same slices, here taken from the torch network (`UNet.forward_with_features`, the
  tensor the ONNX model exports), threshold from the model's training and validation
  subjects. A checkpoint trained before the check existed gets its reference made now
  from the checkpoint and its cohort (`mri2mri.train.feature_reference`), in memory
  only; the verdict says so (``reference``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.synthesis import features
from mri2mri.runtime.synthesis.disagreement import judge, measure_prepared
from mri2mri.train.feature_reference import prepared_vectors, reference_of_checkpoint
from mri2mri.train.inference import predict_slices
from mri2mri.train.prepare import SubjectData

from .evaluate import ScoredRun
from .report import REFERENCE_MADE_NOW as MADE_NOW

#: Where a verdict's reference came from (or `MADE_NOW`).
RECORDED = "recorded in the checkpoint"


def disagreement_verdict(run: ScoredRun, data: SubjectData) -> dict[str, Any]:
    """figure, threshold (None without a recorded reference), flagged, validation_max."""
    inputs = stack_context(data.prepared.slices, run.meta.context)
    figure = measure_prepared(lambda stacks: predict_slices(run.model, stacks),
                              data.prepared, inputs)
    verdict = judge(figure, run.meta.ood)
    return {"figure": verdict.figure, "threshold": verdict.threshold,
            "flagged": verdict.flagged, "validation_max": verdict.validation_max}


def feature_reference(run: ScoredRun) -> tuple[dict[str, Any] | None, str]:
    """The run's feature reference and where it came from (or None and why not).

    Made at most once per run: kept in ``run.meta.ood`` (in memory; the file is not
    changed), with the reason in ``run.feature_reference_note``.
    """
    recorded = run.meta.ood.get(features.KEY) or {}
    if recorded.get("version") == features.DEFINITION_VERSION:  # else remade: an older one
        return recorded, run.feature_reference_note or RECORDED
    if run.feature_reference_note:  # tried before, and failed
        return None, run.feature_reference_note
    if run.checkpoint is None:
        run.feature_reference_note = "no reference recorded and no checkpoint to make one from"
        return None, run.feature_reference_note
    try:
        record = reference_of_checkpoint(run.checkpoint)
    except (InputError, ValueError) as exc:
        run.feature_reference_note = f"no reference: {exc}"
        return None, run.feature_reference_note
    run.meta.ood = {**run.meta.ood, features.KEY: record}
    run.feature_reference_note = MADE_NOW
    return record, MADE_NOW


def feature_verdict(run: ScoredRun, data: SubjectData) -> dict[str, Any]:
    """figure, threshold, flagged, reference_max (None without a reference) and where
    the reference came from."""
    record, source = feature_reference(run)
    scan = prepared_vectors(run.model, data.prepared, run.meta.context)
    verdict = features.judge(scan, {features.KEY: record} if record else {})
    return {"figure": verdict.figure, "threshold": verdict.threshold,
            "flagged": verdict.flagged, "reference_max": verdict.reference_max,
            "reference": source}


#: Each model-based check's verdict, by its key in a fold's result and the summary.
VERDICTS: dict[str, Callable[[ScoredRun, SubjectData], dict[str, Any]]] = {
    "disagreement": disagreement_verdict, features.KEY: feature_verdict}


def verdicts(run: ScoredRun, data: SubjectData) -> dict[str, dict[str, Any]]:
    """Every model-based check's verdict on one subject, by key."""
    return {key: verdict(run, data) for key, verdict in VERDICTS.items()}
