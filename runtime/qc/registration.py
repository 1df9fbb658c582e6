"""QC report of one registration: before/after, the static image's edges, a flicker.

The moving image is shown on the static grid twice: placed by the headers alone
(before) and by the found transform (after), each with the static image's
edges drawn over it, and each flickering with the static image (CSS animation,
no script), the view in which a misalignment is easiest to see.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import resample_to

from .figures import canonical, three_views
from .page import Html, figure, render, table, write_page

#: Edges: the strongest EDGE_PERCENTILE % of the smoothed gradient inside the foreground.
EDGE_PERCENTILE = 85.0

FLICKER = Template('<figure><div class="flicker"><img src="$bottom" alt="static">'
                   '<img class="top" src="$top" alt="moving"></div>'
                   "<figcaption>$caption</figcaption></figure>")
REPORT = Template("<h2>Before: headers only</h2>$before$before_flicker"
                  "<h2>After: registered</h2>$after$after_flicker"
                  "$synthesized"
                  "<h2>Parameters</h2>$params"
                  "<h2>Timings</h2>$timings")
SYNTHESIZED = Template("<h2>Synthesized intermediary</h2>$figure")
EDGES = "red: edges of the static image"


def edge_map(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Binary edges of an image on its canonical (RAS+) grid."""
    data, _ = canonical(img)
    smooth = ndimage.gaussian_filter(data, 1.0)
    magnitude = np.sqrt(sum(ndimage.sobel(smooth, axis=a) ** 2 for a in range(3)))
    mask = foreground_mask(data)
    values = magnitude[mask] if mask.any() else magnitude.ravel()
    return magnitude > np.percentile(values, EDGE_PERCENTILE)


def flicker(bottom: str, top: str, caption: str) -> Html:
    """Two pictures of the same size alternating every second (pure CSS)."""
    return render(FLICKER, bottom=bottom, top=top, caption=caption)


def write_registration_report(path: str | Path, moving: nib.Nifti1Image,
                              static: nib.Nifti1Image, after: nib.Nifti1Image, *,
                              params: Mapping[str, Any], seconds: Mapping[str, float],
                              synthesized: nib.Nifti1Image | None = None) -> Path:
    """One self-contained HTML page; `after` is the moving image resliced by the transform."""
    before = resample_to(moving, static)
    edges = edge_map(static)
    static_png = three_views(static)
    extra = Html("") if synthesized is None else render(SYNTHESIZED, figure=figure(
        three_views(synthesized, edges),
        "the image registered to, synthesized from the static image on its grid",
        alt="synthesized"))
    body = render(
        REPORT,
        before=figure(three_views(before, edges), "moving image on the static grid as the "
                      f"headers place it; {EDGES}", alt="before with edges"),
        before_flicker=flicker(static_png, three_views(before),
                               "flicker: static / moving (before)"),
        after=figure(three_views(after, edges),
                     f"moving image resliced by the found transform; {EDGES}",
                     alt="after with edges"),
        after_flicker=flicker(static_png, three_views(after), "flicker: static / moving (after)"),
        synthesized=extra, params=table(params),
        timings=table({k: f"{v:.2f} s" for k, v in seconds.items()}))
    return write_page(Path(path), f"mri2mri-register: {params.get('moving', '')} -> "
                                  f"{params.get('static', '')}", body)
