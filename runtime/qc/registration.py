"""QC report of one registration: before/after, the static image's edges, a flicker.

The moving image is shown on the static grid twice: placed by the headers alone
(before) and by the found transform (after), each with the static image's
edges drawn over it, and each flickering with the static image (CSS animation,
no script), the view in which a misalignment is easiest to see.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import resample_to

from .figures import canonical, three_views
from .page import esc, table, write_page

#: Edges: the strongest EDGE_PERCENTILE % of the smoothed gradient inside the foreground.
EDGE_PERCENTILE = 85.0


def edge_map(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Binary edges of an image on its canonical (RAS+) grid."""
    data, _ = canonical(img)
    smooth = ndimage.gaussian_filter(data, 1.0)
    magnitude = np.sqrt(sum(ndimage.sobel(smooth, axis=a) ** 2 for a in range(3)))
    mask = foreground_mask(data)
    values = magnitude[mask] if mask.any() else magnitude.ravel()
    return magnitude > np.percentile(values, EDGE_PERCENTILE)


def flicker(bottom: str, top: str, caption: str) -> str:
    """Two pictures of the same size alternating every second (pure CSS)."""
    return (f'<figure><div class="flicker"><img src="{bottom}" alt="static">'
            f'<img class="top" src="{top}" alt="moving"></div>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def write_registration_report(path: str | Path, moving: nib.Nifti1Image,
                              static: nib.Nifti1Image, after: nib.Nifti1Image,
                              params: Mapping[str, Any], seconds: Mapping[str, float],
                              synthesized: nib.Nifti1Image | None = None) -> Path:
    """One self-contained HTML page; `after` is the moving image resliced by the transform."""
    before = resample_to(moving, static)
    edges = edge_map(static)
    static_png = three_views(static)
    before_png, after_png = three_views(before), three_views(after)
    parts = [
        "<h2>Before: headers only</h2>",
        f'<figure><img src="{three_views(before, edges)}" alt="before with edges">'
        "<figcaption>moving image on the static grid as the headers place it; red: edges of "
        "the static image</figcaption></figure>",
        flicker(static_png, before_png, "flicker: static / moving (before)"),
        "<h2>After: registered</h2>",
        f'<figure><img src="{three_views(after, edges)}" alt="after with edges">'
        "<figcaption>moving image resliced by the found transform; red: edges of the static "
        "image</figcaption></figure>",
        flicker(static_png, after_png, "flicker: static / moving (after)"),
    ]
    if synthesized is not None:
        parts += ["<h2>Synthesized intermediary</h2>",
                  f'<figure><img src="{three_views(synthesized, edges)}" alt="synthesized">'
                  "<figcaption>the image registered to, synthesized from the static image on "
                  "its grid</figcaption></figure>"]
    parts += ["<h2>Parameters</h2>", table(params),
              "<h2>Timings</h2>", table({k: f"{v:.2f} s" for k, v in seconds.items()})]
    return write_page(Path(path), f"mri2mri-register: {params.get('moving', '')} -> "
                                  f"{params.get('static', '')}", "".join(parts))
