"""Pictures for the QC reports: orthogonal views rendered to PNG data URIs (matplotlib, Agg)."""

from __future__ import annotations

import base64
import io

import nibabel as nib
import numpy as np

from ..orientation import to_canonical

VIEWS = ("axial", "coronal", "sagittal")


def orthogonal_views(volume: np.ndarray) -> list[np.ndarray]:
    """Central axial, coronal and sagittal slices of a RAS-ordered volume, display-oriented."""
    x, y, z = (s // 2 for s in volume.shape)
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def view_aspects(affine: np.ndarray) -> list[float]:
    """imshow aspect ratios of `orthogonal_views` for a canonical grid with this affine."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    return [zooms[1] / zooms[0], zooms[2] / zooms[0], zooms[2] / zooms[1]]


def canonical(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """(RAS+ data, its affine) of a 3D image."""
    view = to_canonical(img, np.asarray(img.dataobj, dtype=np.float32))
    return view.data, view.affine


def display_range(volume: np.ndarray) -> tuple[float, float]:
    """0 to the 99.5th percentile of positive voxels: robust to a few hot voxels."""
    positive = volume[volume > 0]
    return 0.0, float(np.percentile(positive, 99.5)) if positive.size else 1.0


def png_uri(fig) -> str:  # noqa: ANN001 - a matplotlib Figure
    """A figure as a ``data:image/png;base64,...`` URI (closes the figure)."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, facecolor="black")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def three_views(img: nib.spatialimages.SpatialImage, edges: np.ndarray | None = None,
                height: float = 2.2) -> str:
    """Axial, coronal and sagittal central slices in one PNG; `edges` (same RAS grid) in red."""
    plt = _pyplot()
    data, affine = canonical(img)
    low, high = display_range(data)
    fig, axes = plt.subplots(1, 3, figsize=(3 * height, height))
    edge_views = orthogonal_views(edges) if edges is not None else [None] * 3
    for ax, view, aspect, edge in zip(axes, orthogonal_views(data), view_aspects(affine),
                                      edge_views, strict=True):
        ax.imshow(view, cmap="gray", origin="lower", aspect=aspect, vmin=low, vmax=high,
                  interpolation="nearest")
        if edge is not None:
            ax.contour(edge.astype(float), levels=[0.5], colors="red", linewidths=0.6,
                       origin="lower")
        ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0)
    return png_uri(fig)
