"""QC report of one distortion correction: the T1w's edges over the b=0, before and after.

Like fMRIPrep's susceptibility-correction reportlet: a wrong field is easiest to see where
the b=0's brain edge crosses the T1w's (the frontal lobe above the sinuses, the temporal
poles), so both the distorted and the corrected b=0 are shown with the T1w's edges drawn
over them, and the two flicker. The field map (Hz, blue negative, red positive) and the
synthesized b=0 the field was estimated against are shown too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

import nibabel as nib
import numpy as np

from .figures import VIEW_HEIGHT, _display, _view_shapes, canonical, orthogonal_views, png_uri
from .figures import three_views as three_views
from .page import Html, figure, render, table, write_page
from .registration import edge_map, flicker

REPORT = Template("$summary<h2>Before: the distorted b=0</h2>$before"
                  "<h2>After: corrected (and aligned with the T1w)</h2>$after"
                  "<h2>Before / after</h2>$flick"
                  "<h2>Field map</h2>$field"
                  "<h2>Synthesized b=0 (the undistorted reference)</h2>$reference"
                  "<h2>Parameters</h2>$params<h2>Timings</h2>$timings")
EDGES = "red: edges of the T1w inside the brain"


def _signed_rgb(values: np.ndarray, limit: float) -> np.ndarray:
    """Blue (negative) - black (zero) - red (positive), saturating at +-`limit`."""
    scaled = np.clip(values / max(limit, 1e-12), -1.0, 1.0)
    rgb = np.zeros((*values.shape, 3), np.uint8)
    rgb[..., 0] = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    rgb[..., 2] = (np.clip(-scaled, 0, 1) * 255).astype(np.uint8)
    rgb[..., 1] = (np.abs(scaled) * 60).astype(np.uint8)
    return rgb


def signed_views(img: nib.spatialimages.SpatialImage, limit: float) -> str:
    """The three central views of a signed map (a field in Hz) as one PNG data URI."""
    data, affine = canonical(img)
    panels = []
    for view, shape in zip(orthogonal_views(data), _view_shapes(data.shape, affine), strict=True):
        rgb = _signed_rgb(_display(view, shape, order=1), limit)
        top = (VIEW_HEIGHT - shape[0]) // 2
        panels += [np.pad(rgb, ((top, VIEW_HEIGHT - shape[0] - top), (0, 0), (0, 0))),
                   np.zeros((VIEW_HEIGHT, 6, 3), np.uint8)]
    return png_uri(np.concatenate(panels[:-1], axis=1))


def brain_edges(t1w: nib.Nifti1Image, brain: np.ndarray) -> np.ndarray:
    """The T1w's edges inside the brain (grown a little): its brain outline, ventricles and
    grey/white boundaries, not the scalp, which a fat-suppressed b=0 does not show."""
    data = np.asarray(t1w.dataobj, np.float32) * brain
    return edge_map(nib.Nifti1Image(data, t1w.affine, t1w.header))


def write_distortion_report(path: str | Path, *, before: nib.Nifti1Image,
                            after: nib.Nifti1Image, t1w_before: nib.Nifti1Image,
                            t1w_after: nib.Nifti1Image, field_hz: nib.Nifti1Image,
                            reference: nib.Nifti1Image, brain: np.ndarray,
                            summary: Mapping[str, Any], params: Mapping[str, Any],
                            seconds: Mapping[str, float],
                            cpu_seconds: Mapping[str, float]) -> Path:
    """One self-contained HTML page. All images lie on the series' grid: `before` (the mean
    b=0 as acquired) with `t1w_before` (the T1w placed on it by the rigid transform), `after`
    (the corrected mean b=0, aligned with the T1w) with `t1w_after`; `brain` (a mask on that
    grid) limits the edges and the field map to the brain."""
    hz = np.asarray(field_hz.dataobj, np.float32) * brain
    limit = float(np.percentile(np.abs(hz[brain]), 99.5)) if brain.any() else 0.0
    limit = limit or 1.0
    field_hz = nib.Nifti1Image(hz, field_hz.affine, field_hz.header)
    before_png, after_png = three_views(before), three_views(after)
    body = render(
        REPORT, summary=table(summary),
        before=figure(three_views(before, brain_edges(t1w_before, brain)),
                      f"mean b=0 as acquired, the T1w placed on it rigidly; {EDGES}",
                      alt="before with edges"),
        after=figure(three_views(after, brain_edges(t1w_after, brain)),
                     f"mean b=0 corrected and aligned with the T1w; {EDGES}",
                     alt="after with edges"),
        flick=flicker(before_png, after_png, "flicker: before / after correction"),
        field=figure(signed_views(field_hz, limit),
                     f"estimated field map (Hz) inside the brain: red positive, blue negative, "
                     f"full colour at +-{limit:.0f} Hz", alt="field map"),
        reference=figure(three_views(reference), "the b=0 the model synthesized from the T1w, "
                         "on the series' grid", alt="synthesized b=0"),
        params=table(params),
        timings=table({k: f"{v:.2f} s wall, {cpu_seconds.get(k, 0.0):.2f} s CPU"
                       for k, v in seconds.items()}))
    return write_page(Path(path), f"mri2mri distortion correction: {params.get('series', '')}",
                      Html(body))
