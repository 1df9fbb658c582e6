"""Per-subject QC picture: every contrast with the reference's edges drawn on top.

Misregistration shows as edges that do not follow the underlying anatomy. The
b=0 image stays on its native DWI grid (it is not registered), so its row shows
how far the DWI sits from the anatomy as acquired.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.orientation import to_canonical
from mri2mri.runtime.imaging.resample import resample_to

from ..preview import orthogonal_views, view_aspects


def _canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, list[float]]:
    """RAS-ordered voxels and the display aspect ratios of their three views."""
    view = to_canonical(img, np.asarray(img.dataobj, dtype=np.float32))
    return view.data, view_aspects(view.affine)


def _edges(data: np.ndarray) -> np.ndarray:
    """Strongest 8 % of gradient magnitude inside the head, as a boolean mask."""
    smooth = ndimage.gaussian_filter(data, 1.0)
    mag = np.sqrt(sum(ndimage.sobel(smooth, axis=a) ** 2 for a in range(3)))
    head = foreground_mask(data)
    if not head.any():
        return np.zeros(data.shape, bool)
    return (mag > np.percentile(mag[head], 92)) & ndimage.binary_dilation(head)


def write_qc(path: str | Path, anatomy: dict[str, nib.Nifti1Image], *, reference: str,
             b0: nib.Nifti1Image | None, title: str) -> Path:
    """Write a PNG: rows = contrasts (+ b=0), columns = axial, coronal, sagittal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, np.ndarray, np.ndarray, list[float]]] = []
    if anatomy:
        ref_img = anatomy[reference]
        ref_edges = _edges(_canonical(ref_img)[0])
        for name in sorted(anatomy, key=lambda c: (c != reference, c)):
            data, aspects = _canonical(anatomy[name])
            rows.append((name, data, ref_edges, aspects))
    if b0 is not None:
        b0_data, aspects = _canonical(b0)
        edges = _edges(_canonical(resample_to(anatomy[reference], b0))[0]) if anatomy \
            else _edges(b0_data)
        rows.append(("b0 (native DWI grid)", b0_data, edges, aspects))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for (name, data, edges, aspects), row in zip(rows, axes, strict=True):
        mask = foreground_mask(data)
        centre = tuple(int(round(c)) for c in ndimage.center_of_mass(mask)) if mask.any() \
            else tuple(s // 2 for s in data.shape)
        vmax = float(np.percentile(data[mask], 99)) if mask.any() else float(data.max())
        for ax, plane, edge, aspect in zip(row, orthogonal_views(data, centre),
                                           orthogonal_views(edges, centre), aspects, strict=True):
            ax.imshow(plane, cmap="gray", origin="lower", vmin=0, vmax=vmax or 1.0, aspect=aspect)
            overlay = np.zeros(edge.shape + (4,))
            overlay[edge] = (1.0, 0.2, 0.2, 0.7)
            ax.imshow(overlay, origin="lower", interpolation="nearest", aspect=aspect)
            ax.set_axis_off()
        row[0].set_title(f"{name} (edges: {reference})", loc="left", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=60)
    plt.close(fig)
    return Path(path)
