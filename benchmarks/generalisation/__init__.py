"""Cross-scanner evaluation: trained models against the look-up table on shifted cohorts.

`evaluate_runs` is what `mri2mri-bench generalisation` calls: every run's
`best.pt` and its fitted LUT baseline synthesize every subject of every cohort,
scored against the cohort's own target images (see docs/training.md,
"Generalisation to other scanners").
"""

from .evaluate import CohortScore, evaluate_checkpoint, evaluate_runs, summarise

__all__ = ["CohortScore", "evaluate_checkpoint", "evaluate_runs", "summarise"]
