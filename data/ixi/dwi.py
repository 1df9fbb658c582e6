"""Assemble IXI's one-file-per-volume DTI into a 4D series, and find volumes not in the b-table.

The IXI release lists 16 b-values/vectors (one b=0, 15 directions) for 17 volumes.
Which volume is the odd one out is decided from the images: a volume the scanner
computed from others (Philips appends an isotropic, trace-weighted image: the
geometric mean of orthogonal directions) or a duplicate is almost perfectly
predicted by the other volumes, in log space, while an acquired volume carries its
own noise. The b-table then breaks ties (a tensor fit with the table matched to the
remaining volumes one to one). Counting alone is never used: dropping the first
file, as some converters do, throws away the b=0 and shifts every direction by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import B0_THRESHOLD, image_like, mean_b0, read_bvals
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import same_grid

#: A volume counts as computed from the others when its leave-one-out prediction
#: residual is below this fraction of the median residual of all volumes.
DEPENDENT_FRACTION = 0.5
#: Volumes within this factor of the smallest residual are tied (e.g. exact duplicates).
TIE_FACTOR = 1.5
#: Without a dependent volume, the tensor fit must single one out by this margin.
TENSOR_MARGIN = 0.9
MAX_VOXELS = 40_000


@dataclass
class DwiSeries:
    """A 4D DWI with one b-value and one vector per volume, and what was left out."""

    image: nib.Nifti1Image
    bvals: np.ndarray  # (N,)
    bvecs: np.ndarray  # (3, N), FSL layout
    source_volumes: list[int]  # IXI volume number of each kept volume
    dropped: list[dict] = field(default_factory=list)  # one evidence record per dropped volume

    def mean_b0(self) -> nib.Nifti1Image:
        """The mean of the b=0 volumes, float32, on the DWI grid."""
        data = np.asarray(self.image.dataobj, dtype=np.float32)
        return image_like(self.image, mean_b0(data, self.bvals, "DWI series"))

    def summary(self) -> str:
        if not self.dropped:
            return f"{len(self.bvals)} volumes match the b-table one to one"
        return "; ".join(d["reason"] for d in self.dropped)


def read_table(bvals: str | Path, bvecs: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL/IXI ``bvals.txt`` (one row) and ``bvecs.txt`` (3 rows, or N rows of 3)."""
    values = read_bvals(bvals)
    try:
        vectors = np.loadtxt(bvecs, dtype=float, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(bvecs, f"not a b-vector file ({exc})") from None
    if vectors.shape[0] != 3 and vectors.shape[1] == 3:
        vectors = vectors.T
    if vectors.shape != (3, values.size):
        raise InputError(bvecs, f"{vectors.shape} b-vectors do not match {values.size} b-values "
                                "(expected 3 rows of that length)")
    return values, vectors


def _sample(data: np.ndarray, seed: int = 0) -> np.ndarray:
    """Log signal of up to MAX_VOXELS head voxels where every volume is positive, (V, N)."""
    mask = foreground_mask(data.mean(axis=3)) & np.all(data > 0, axis=3)
    signal = data[mask].astype(np.float64)
    if signal.shape[0] < 100:
        raise ValueError("fewer than 100 head voxels with signal in every volume")
    if signal.shape[0] > MAX_VOXELS:
        pick = np.random.default_rng(seed).choice(signal.shape[0], MAX_VOXELS, replace=False)
        signal = signal[np.sort(pick)]
    return np.log(signal)


def dependence_residuals(log_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per volume: residual std of predicting its log signal from all others, and the weights.

    Both come from one inverse covariance (precision) matrix P: the least-squares
    residual variance of volume k given the rest is 1 / P[k, k] and its weights are
    -P[k, j] / P[k, k]. A tiny ridge keeps exact duplicates (a singular covariance)
    finite: they come out with a near-zero residual, as they should.
    """
    cov = np.cov(log_signal, rowvar=False)
    cov += np.eye(len(cov)) * 1e-8 * float(np.trace(cov)) / len(cov)
    precision = np.linalg.inv(cov)
    diag = np.diag(precision)
    weights = -precision / diag[:, None]
    np.fill_diagonal(weights, 0.0)
    return np.sqrt(1.0 / diag), weights


def tensor_residuals(log_signal: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """Per volume k: median voxel RMS residual of a log-linear tensor fit without volume k."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import design_matrix

    design = design_matrix(gradient_table(bvals, bvecs=bvecs.T, b0_threshold=B0_THRESHOLD))
    fit = np.linalg.pinv(design)
    n = log_signal.shape[1]
    out = np.empty(n)
    for k in range(n):
        y = np.delete(log_signal, k, axis=1).T
        residual = y - design @ (fit @ y)
        out[k] = float(np.median(np.sqrt(np.mean(residual ** 2, axis=0))))
    return out


def find_extra_volume(log_signal: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray,
                      labels: list[int]) -> dict:
    """Decide which single volume is not in the b-table; return the evidence.

    `labels` are the IXI volume numbers of the columns (for messages).
    """
    residuals, weights = dependence_residuals(log_signal)
    fit = tensor_residuals(log_signal, bvals, bvecs)
    median = float(np.median(residuals))
    dependent = np.flatnonzero(residuals < DEPENDENT_FRACTION * median)
    evidence: dict = {
        "dependence_residual_std": {labels[k]: round(float(r), 5) for k, r in enumerate(residuals)},
        "dependence_residual_median": round(median, 5),
        "tensor_fit_residual_without": {labels[k]: round(float(r), 5) for k, r in enumerate(fit)},
    }
    if dependent.size:
        tied = [k for k in dependent if residuals[k] <= TIE_FACTOR * residuals[dependent].min()]
        pick = min(tied, key=lambda k: fit[k])
        w = weights[pick]
        sources = [j for j in np.argsort(-w) if w[j] > 0.15]
        geo = log_signal[:, sources].mean(axis=1)
        corr = float(np.corrcoef(geo, log_signal[:, pick])[0, 1])
        ratio = float(np.exp(np.median(log_signal[:, pick] - geo)))
        src_labels = sorted(labels[j] for j in sources)
        kind = ("a copy of volume" if len(sources) == 1 else
                "the geometric mean of volumes") + " " + ", ".join(f"{s:02d}" for s in src_labels)
        evidence.update(
            method="dependence",
            predicted_from=src_labels,
            weights=[round(float(w[j]), 3) for j in sorted(sources, key=lambda j: labels[j])],
            correlation_with_geometric_mean=round(corr, 5),
            intensity_ratio_to_geometric_mean=round(ratio, 4),
            tied_candidates=[labels[k] for k in tied],
        )
        reason = (f"volume {labels[pick]:02d} is {kind} (log-signal residual "
                  f"{residuals[pick]:.4f} vs median {median:.4f}; correlation {corr:.5f}, "
                  f"intensity ratio {ratio:.4f}): " + ("a duplicate" if len(sources) == 1 else
                  "a scanner-derived image (for Philips, the isotropic trace-weighted image)")
                  + ", not an acquired direction")
    else:
        order = np.argsort(fit)
        if fit[order[0]] > TENSOR_MARGIN * fit[order[1]]:
            raise ValueError(
                f"cannot tell from the images which of the {len(labels)} volumes is not in the "
                f"{len(bvals)}-entry b-table: no volume is predicted by the others and the tensor "
                f"fit does not single one out ({fit[order[0]]:.4f} vs {fit[order[1]]:.4f})")
        pick = int(order[0])
        evidence["method"] = "tensor-fit"
        reason = (f"volume {labels[pick]:02d} left out: the tensor fit with the b-table matched "
                  f"to the other volumes has the smallest residual ({fit[pick]:.4f} vs "
                  f"{fit[order[1]]:.4f} next best)")
    evidence.update(volume=labels[pick], reason=reason)
    return evidence


def assemble_dwi(volumes: list[tuple[int, nib.Nifti1Image, str]], bvals: np.ndarray,
                 bvecs: np.ndarray) -> DwiSeries:
    """Stack (volume number, 3D image, file name) into 4D and match it to the b-table."""
    volumes = sorted(volumes, key=lambda v: v[0])
    numbers = [v[0] for v in volumes]
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
    if missing:
        raise ValueError("DTI volume(s) " + ", ".join(f"{m:02d}" for m in missing) + " missing")
    first = volumes[0][1]
    for _, img, name in volumes[1:]:
        if not same_grid(img, first) or img.ndim != 3:
            raise ValueError(f"conflicting grids: DTI file {name} has shape {img.shape} or an "
                             f"affine that differs from {volumes[0][2]} {first.shape}")
    data = np.stack([np.asanyarray(img.dataobj) for _, img, _ in volumes], axis=-1)
    n, m = data.shape[3], bvals.size
    if n < m:
        raise ValueError(f"{n} DTI volumes but {m} b-values: volumes are missing")
    kept = list(range(n))
    dropped: list[dict] = []
    if n > m:
        log_signal = _sample(data.astype(np.float32))
        for _ in range(n - m):
            evidence = find_extra_volume(log_signal[:, kept], bvals, bvecs,
                                         [numbers[k] for k in kept])
            evidence["file"] = volumes[numbers.index(evidence["volume"])][2]
            dropped.append(evidence)
            kept.remove(numbers.index(evidence["volume"]))
            if len(kept) > m:  # more extras: the b-table check needs a full-length table
                raise ValueError(f"{n} DTI volumes for {m} b-values: only one extra volume "
                                 "per series can be identified")
    # The scanner's integers stay integers (IXI: int16): the series is stored as acquired.
    dtype = data.dtype if np.issubdtype(data.dtype, np.integer) else np.float32
    image = image_like(first, data[..., kept], dtype=dtype)
    return DwiSeries(image, bvals.copy(), bvecs.copy(), [numbers[k] for k in kept], dropped)
