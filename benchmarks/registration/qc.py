"""QC pages for the benchmark's subjects: what each method did to each moved pair.

The same page as `mri2mri-register --report` (before/after with the static
image's edges, a flicker), one per subject and method, plus an index, so a
surprising row of results.csv can be looked at, not only counted.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import nibabel as nib
import numpy as np

from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.qc.page import Html, join, render, write_page
from mri2mri.runtime.qc.registration import write_registration_report

REPORTS_DIR = "reports"
INDEX = Template("<table><tr><th>subject</th>$methods</tr>$rows</table>"
                 "<p>Each page: the moving image before (headers only) and after registration to "
                 "the moved static image, with the static image's edges, and a flicker.</p>")
METHOD = Template("<th>$method</th>")
ROW = Template("<tr><th>$subject</th>$cells</tr>")
LINK = Template('<td><a href="$page">view</a></td>')
NO_PAGE = Html("<td>-</td>")


def resliced(moving: nib.Nifti1Image, static: nib.Nifti1Image, affine: np.ndarray
             ) -> nib.Nifti1Image:
    """`moving` on `static`'s grid through a static->moving world `affine` (DIPY's convention).

    Placing the moving voxels at ``inv(affine) @ moving.affine`` puts them in the
    static image's world; resampling onto the static grid is then plain.
    """
    placed = nib.Nifti1Image(np.asarray(moving.dataobj, dtype=np.float32),
                             np.linalg.inv(affine) @ moving.affine)
    return resample_to(placed, static)


def page_name(subject_id: str, method: str) -> str:
    return f"{subject_id}_{method}.html"


def write_pair_report(report_dir: Path, subject_id: str, method: str, *,
                      moving: nib.Nifti1Image,
                      moved: nib.Nifti1Image, found: np.ndarray, seconds: float,
                      params: dict[str, object]) -> Path:
    """One method's registration of a subject's moving image to its moved static image."""
    return write_registration_report(
        report_dir / page_name(subject_id, method), moving, moved,
        resliced(moving, moved, found),
        params={"subject": subject_id, "method": method, **params},
        seconds={"registration": seconds})


def write_index(report_dir: Path, subjects: list[str], methods: list[str]) -> Path:
    """A table of every subject's pages that exist (subjects reused from the cache of a run
    without reports have none)."""
    rows = []
    for sid in subjects:
        cells = [render(LINK, page=page_name(sid, m))
                 if (report_dir / page_name(sid, m)).exists() else NO_PAGE for m in methods]
        rows.append(render(ROW, subject=sid, cells=join(cells)))
    body = render(INDEX, methods=join(render(METHOD, method=m) for m in methods), rows=join(rows))
    return write_page(report_dir / "index.html", "mri2mri registration benchmark: QC", body)
