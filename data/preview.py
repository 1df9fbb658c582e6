"""A PNG montage of one subject's contrasts: does the cohort look like brain MRI?"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.imaging.orientation import to_canonical
from mri2mri.runtime.qc.figures import orthogonal_views, view_aspects

__all__ = ["PREVIEW_CONTRASTS", "orthogonal_views", "view_aspects", "write_preview"]

PREVIEW_CONTRASTS = ("T1w", "T2w", "PDw", "b0")


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
