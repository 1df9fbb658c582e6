"""Distortion correction from files to files: what `mri2mri-register --correct-distortion` runs.

Why a module of its own: the computation (`distortion.compute_correction`) stays in memory
and testable; this one names, fills and writes the outputs (a BIDS derivative, see
`distortion_outputs`), all staged and moved into place together, and the QC page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from mri2mri.runtime.bids.names import sidecar_path
from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.resample import resample_to

from .distortion import Correction, compute_correction
from .distortion_apply import unwarp_series
from .distortion_field import DEFAULT_FIELD_SETTINGS, FieldSettings
from .distortion_inputs import read_sidecar
from .distortion_outputs import (
    Layout,
    Staging,
    check_outputs,
    describe_dataset,
    layout_for,
    raw_uri,
)
from .io import save_itk, save_matrix

if TYPE_CHECKING:  # hints only
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer


@dataclass
class CorrectionResult:
    """What `correct_distortion` did: the computation and the files written."""

    correction: Correction
    layout: Layout
    written: list[Path]


def _provenance(c: Correction, dwi: Path, t1w: Path) -> dict[str, object]:
    """The corrected series' sidecar section: how it was made, from what, how long it took."""
    import dipy

    from mri2mri.runtime import __version__

    return {
        "Method": "SyN (DIPY SymmetricDiffeomorphicRegistration, local cross-correlation) "
                  "restricted to the phase-encoding axis, registering the mean b=0 to a b=0 "
                  "synthesized from the T1w; one resampling per volume (rigid + displacement), "
                  "Jacobian intensity correction; b-vectors rotated by the rigid map",
        "Series": dwi.name, "T1w": t1w.name, "Model": c.synthesized.model,
        "ModelSha256": c.synthesized.sha256,
        "ModelTask": c.synthesized.task, "T1wVsModelTrainingData": c.synthesized.ood,
        "PhaseEncodingDirection": c.readout.phase_encoding,
        "TotalReadoutTime": c.readout.total_readout_time, "ReadOutFrom": c.readout.origin,
        "FieldSettings": c.displacement.settings,
        "RigidRegistration": {"settings": c.registration.settings,
                              "series_to_T1w_ras": c.registration.affine.round(6).tolist()},
        "Displacement": c.summary(),
        "Timings": {"wall_s": {k: round(v, 3) for k, v in c.clock.seconds.items()},
                    "cpu_s": {k: round(v, 3) for k, v in c.clock.cpu.items()}},
        "Software": {"mri2mri": __version__, "dipy": dipy.__version__,
                     "numpy": np.__version__, "nibabel": nib.__version__},
    }


def _save(img: nib.Nifti1Image, staging: Staging, final: Path) -> None:
    nib.save(img, str(staging.path(final)))


def _text(staging: Staging, final: Path, text: str) -> None:
    staging.path(final).write_text(text)


def _series_files(c: Correction, layout: Layout, staging: Staging, dwi: Path, *, t1w: Path,
                  sidecar: Path) -> None:
    """The corrected series (grid, affine and volume order of the input), .bval, .bvec, .json."""
    series = c.series
    _save(image_like(series.image, c.corrected, "mri2mri distortion-corrected"), staging,
          layout.series(".nii.gz"))
    if series.bvals is not None:
        _text(staging, layout.series(".bval"), " ".join(f"{b:g}" for b in series.bvals) + "\n")
        _text(staging, layout.series(".bvec"), "\n".join(
            " ".join(f"{v:.6f}" for v in row) for row in c.bvecs) + "\n")
    meta = read_sidecar(sidecar)
    sources = [u for u in (raw_uri(dwi), raw_uri(t1w)) if u is not None]
    meta.update(SkullStripped=False, SpatialReference=raw_uri(t1w) or t1w.name,
                Description="Susceptibility distortion corrected (mri2mri, no field map: "
                            "through a b=0 synthesized from the T1w), aligned with the T1w on "
                            "the input's grid.", DistortionCorrection=_provenance(c, dwi, t1w))
    if sources:
        meta["Sources"] = sources
    write_json(staging.path(layout.series(".json")), meta, default=float)


def _field_files(c: Correction, layout: Layout, staging: Staging, dwi: Path) -> None:
    """The field map (Hz) with its magnitude (the corrected b=0 in the field's space) and the
    displacement (mm), on the series' grid, as BIDS derivatives define a field map."""
    ref = c.series.b0
    hz = c.displacement.hz(c.readout.total_readout_time, c.readout.pe_sign)
    magnitude = unwarp_series(np.asarray(ref.dataobj, np.float32), ref.affine, c.displacement)
    _save(image_like(ref, hz, "mri2mri field map (Hz)"), staging, layout.fmap("fieldmap",
                                                                              ".nii.gz"))
    _save(image_like(ref, magnitude, "corrected mean b=0"), staging,
          layout.fmap("magnitude", ".nii.gz"))
    _save(image_like(ref, c.displacement.mm, "displacement along PE (mm)"), staging,
          layout.fmap("displacement", ".nii.gz"))
    common = {"SkullStripped": False}
    fmap = {**common, "Units": "Hz", "B0FieldIdentifier": layout.b0_field_id(),
            "Description": "Off-resonance field estimated without a field map by mri2mri "
                           "(SyN along the phase-encoding axis to a b=0 synthesized from the "
                           "T1w), in the undistorted space of the series it was estimated "
                           "from; displacement (voxels) = Hz x TotalReadoutTime along "
                           "PhaseEncodingDirection.",
            "PhaseEncodingDirection": c.readout.phase_encoding,
            "TotalReadoutTime": c.readout.total_readout_time}
    if raw_uri(dwi) is not None:
        fmap["IntendedFor"] = [raw_uri(dwi)]
    write_json(staging.path(layout.fmap("fieldmap", ".json")), fmap)
    write_json(staging.path(layout.fmap("magnitude", ".json")),
               {**common, "Description": "The corrected mean b=0 in the field map's space."})
    write_json(staging.path(layout.fmap("displacement", ".json")),
               {"Units": "mm", "PhaseEncodingDirection": c.readout.phase_encoding,
                "Description": "Signed displacement along the phase-encoding voxel axis "
                               "(positive: towards increasing index) from each undistorted "
                               "voxel to where its signal lies in the acquired series."})


def _report(c: Correction, layout: Layout, staging: Staging, dwi: Path, *, t1w: Path) -> None:
    from ..qc.distortion import write_distortion_report

    ref = c.series.b0
    b0s = c.series.b0_mask
    after = c.corrected if c.corrected.ndim == 3 else c.corrected[..., b0s].mean(axis=3)
    hz = c.displacement.hz(c.readout.total_readout_time, c.readout.pe_sign)
    params = {"series": dwi.name, "T1w": t1w.name, "model": Path(c.synthesized.model).name,
              "model task": c.synthesized.task,
              "T1w vs the model's training data": c.synthesized.ood,
              "PhaseEncodingDirection": f"{c.readout.phase_encoding} "
                                        f"({c.readout.origin['PhaseEncodingDirection']})",
              "TotalReadoutTime": f"{c.readout.total_readout_time:g} s "
                                  f"({c.readout.origin['TotalReadoutTime']})",
              "rigid (series -> T1w, RAS mm)": " / ".join(
                  " ".join(f"{v:.4g}" for v in row) for row in c.registration.affine[:3])}
    write_distortion_report(
        staging.path(layout.report()), before=ref, after=image_like(ref, after),
        t1w_before=c.registration.resample(c.t1w, ref), t1w_after=resample_to(c.t1w, ref),
        field_hz=image_like(ref, hz), reference=image_like(ref, c.reference), brain=c.brain,
        summary=c.summary(), params=params, seconds=c.clock.seconds, cpu_seconds=c.clock.cpu)


def correct_distortion(dwi: str | Path, t1w: str | Path, out_dir: str | Path, *,
                       model: str | Path | Synthesizer, subject: str | None = None,
                       report: bool = True,
                       overwrite: bool = False,
                       field_settings: FieldSettings = DEFAULT_FIELD_SETTINGS,
                       progress: Callable[[str], None] | None = None,
                       **options: object) -> CorrectionResult:
    """Correct `dwi` (4D DWI or 3D b=0) through a b=0 that `model` synthesizes from `t1w`.

    Writes a BIDS derivative under `out_dir` (see `distortion_outputs`); every output is
    checked before any work and all appear together, or none, the corrected series'
    sidecar last (what marks a finished unit for the BIDS App, `distortion_bids`).
    `model`: a file, a starter model's name, or a loaded session. `options` go to
    `distortion.compute_correction` (bvals, bvecs, sidecar, phase_encoding,
    total_readout_time, registration_settings, device, threads, trt_cache).
    """
    dwi, t1w, root = Path(dwi), Path(t1w), Path(out_dir)
    layout = layout_for(dwi, root, subject)
    finals = [layout.series(".nii.gz"), layout.fmap("fieldmap", ".nii.gz"),
              layout.fmap("displacement", ".nii.gz"), layout.transform("itk")]
    check_outputs(finals + ([layout.report()] if report else []), overwrite)
    with Staging(root) as staging:
        c = compute_correction(dwi, t1w, model, field_settings=field_settings,
                               progress=progress, **options)
        with c.clock.stage("write", "writing the outputs"):
            describe_dataset(staging, dwi)
            given = options.get("sidecar")
            _series_files(c, layout, staging, dwi, t1w=t1w,
                          sidecar=Path(given) if given is not None else sidecar_path(dwi))
            _field_files(c, layout, staging, dwi)
            save_itk(c.registration.affine, staging.path(layout.transform("itk")))
            save_matrix(c.registration.affine, staging.path(layout.transform("ras")))
            if report:
                _report(c, layout, staging, dwi, t1w=t1w)
        written = staging.commit(last=layout.series(".json"))
    return CorrectionResult(c, layout, written)


def describe(result: CorrectionResult) -> str:
    """One line about a finished correction, for the command's output."""
    s = result.correction.summary()
    return (f"displacement inside the brain: mean {s['mean_abs_displacement_mm']:.2f} mm, "
            f"largest {s['max_abs_displacement_mm']:.2f} mm; field {s['field_min_hz']:.0f} to "
            f"{s['field_max_hz']:.0f} Hz; " + json.dumps(
                {k: round(v, 1) for k, v in result.correction.clock.cpu.items()}) + " CPU s")
