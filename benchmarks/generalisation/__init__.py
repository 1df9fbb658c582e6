"""Cross-scanner evaluation: trained models against the look-up table on shifted cohorts.

`evaluate_runs` is what `mri2mri-bench generalisation` calls: every run's
`best.pt` and its fitted LUT baseline synthesize every subject of every cohort,
scored against the cohort's own target images (see docs/training.md,
"Generalisation to other scanners"). `loo.leave_one_out` is what
``generalisation --leave-one-out`` calls: on a cohort of real subjects, a network
trained on all but one against the same fold's LUT, for each subject (docs/training.md,
"Leave-one-out on real scans").
"""

from .evaluate import CohortScore, evaluate_checkpoint, evaluate_runs, summarise

__all__ = ["CohortScore", "evaluate_checkpoint", "evaluate_runs", "summarise"]
