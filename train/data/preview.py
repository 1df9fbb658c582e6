"""A PNG montage of one subject's contrasts: does the cohort look like brain MRI?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.atomic import atomic_path
from mri2mri.runtime.cohort import Cohort
from mri2mri.runtime.orientation import to_canonical

PREVIEW_CONTRASTS = ("T1w", "T2w", "PDw", "b0")


def orthogonal_views(volume: np.ndarray, centre: Sequence[int] | None = None
                     ) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through `centre` (default: the middle voxel).

    `volume` is RAS-ordered (`to_canonical`); the slices are transposed for
    ``imshow(origin="lower")``: anterior and superior up, the subject's left on the
    right of the axial and coronal views (radiological left-right is not used).
    """
    x, y, z = (s // 2 for s in volume.shape[:3]) if centre is None else centre
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def view_aspects(affine: np.ndarray) -> list[float]:
    """imshow aspect ratios of `orthogonal_views` for a canonical grid with this affine."""
    zooms = nib.affines.voxel_sizes(affine)
    return [zooms[1] / zooms[0], zooms[2] / zooms[0], zooms[2] / zooms[1]]


def write_preview(root: Path, subject_id: str, out: Path) -> Path:
    """Rows: axial, coronal, sagittal; columns: T1w, T2w, PDw, mean b=0 (on its own grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subject = Cohort.discover(root).subject(subject_id)
    contrasts = [c for c in PREVIEW_CONTRASTS if subject.has(c)]
    fig, axes = plt.subplots(3, len(contrasts), figsize=(3 * len(contrasts), 9),
                             facecolor="black", squeeze=False)
    for col, contrast in enumerate(contrasts):
        img = subject.load(contrast)
        view = to_canonical(img, np.asarray(img.dataobj))
        vmax = float(np.percentile(view.data[view.data > 0], 99.5))
        views = zip(orthogonal_views(view.data), view_aspects(view.affine), strict=True)
        for row, (sl, aspect) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(sl, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
            ax.set_axis_off()
        axes[0, col].set_title(contrast, color="white")
    fig.suptitle(f"{subject_id} (simulated)", color="white")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, facecolor="black")
    plt.close(fig)
    return out
