"""Statistics across subjects: the study's unpaired test, the right paired test, an effect size.

Each subject is registered by every method, so the samples are paired and the
Wilcoxon signed-rank test is the appropriate one; the Mann-Whitney U test is
reported too because the study used it. The effect size is the ratio of mean
errors (method B / method A) with a paired bootstrap confidence interval.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


def ratio_of_means(a: np.ndarray, b: np.ndarray) -> float:
    """mean(b) / mean(a): below 1 means method B has the smaller errors."""
    mean_a = float(np.mean(a))
    return float(np.mean(b)) / mean_a if mean_a > 0 else float("nan")


def bootstrap_ratio_ci(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap (BCa) confidence interval of `ratio_of_means` (subjects resampled)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.all(a == a[0]) and np.all(b == b[0]):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples only widen the interval
        res = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y, axis) / np.mean(x, axis),
                              paired=True, vectorized=True, confidence_level=confidence,
                              n_resamples=resamples, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def compare(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float | int]:
    """Both tests and the ratio of means for paired error samples of methods A and B."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    out: dict[str, float | int] = {"n": int(len(a)), "mean_a": float(np.mean(a)),
                                   "mean_b": float(np.mean(b)),
                                   "median_a": float(np.median(a)),
                                   "median_b": float(np.median(b))}
    if len(a) >= 2:
        out["mann_whitney_u"], out["mann_whitney_p"] = (
            float(v) for v in stats.mannwhitneyu(a, b, alternative="two-sided"))
    else:
        out["mann_whitney_u"] = out["mann_whitney_p"] = float("nan")
    if len(a) >= 2 and np.any(a != b):
        out["wilcoxon_w"], out["wilcoxon_p"] = (float(v) for v in stats.wilcoxon(a, b))
    else:
        out["wilcoxon_w"] = out["wilcoxon_p"] = float("nan")
    out["ratio_of_means"] = ratio_of_means(a, b)
    out["ratio_ci_low"], out["ratio_ci_high"] = bootstrap_ratio_ci(a, b, seed=seed)
    return out
