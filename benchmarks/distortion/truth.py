"""The true susceptibility displacement of a simulated cohort, regenerated from its parameters.

Why regenerate rather than store: the simulators are deterministic (every draw comes from
a seeded stream, and `dataset_description.json` records every parameter), so the field
that distorted a subject's b=0 and the b=0 as it would be without it can be remade
exactly, for cohorts written before this benchmark existed too. Two kinds of cohort:

- the demo cohort with an EPI b=0 (`mri2mri-data demo --epi`): the field is remade with
  the draws of `demo_cohort._epi_dwi` (the subject's EPI stream), and the undistorted
  DWI by simulating the subject again with a TotalReadoutTime of 0 (every random draw is
  the same; nothing moves);
- the pseudo-DWI cohort (`mri2mri-data pseudo-dwi REAL OUT`): `epi.pseudo_b0` on the
  source T2w returns the field itself, and again with a TotalReadoutTime of 0.

Both are checked against what is on disk (the grid, and for the pseudo-DWIs the voxels
themselves), so a simulator that changed since the cohort was made is an error, not a
wrong truth. What is written per subject (``OUT/truth/sub-*/``): the field (Hz) and the
displacement (mm) along the phase-encoding axis on the b=0's grid, the undistorted mean
b=0, and the brain mask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import B0_THRESHOLD, image_like

#: Largest world-space difference (mm) between the remade grid and the stored one.
GRID_TOLERANCE_MM = 1e-3


@dataclass
class Truth:
    """One subject's known answer, on the b=0's grid (voxel order as stored)."""

    displacement_mm: np.ndarray  # along the PE axis's increasing index, at undistorted voxels
    field_hz: np.ndarray
    undistorted_b0: np.ndarray  # the mean b=0 without off-resonance (same noise draws)
    brain: np.ndarray
    affine: np.ndarray
    pe_axis: int

    def save(self, folder: Path, header: nib.Nifti1Header) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (("displacement_mm", self.displacement_mm),
                           ("field_hz", self.field_hz), ("undistorted_b0", self.undistorted_b0),
                           ("brain", self.brain.astype(np.float32))):
            nib.save(image_like(header, data), str(folder / f"{name}.nii.gz"))
        (folder / "truth.json").write_text(json.dumps({"pe_axis": self.pe_axis}) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Truth:
        def arr(name: str) -> np.ndarray:
            return np.asarray(nib.load(str(folder / f"{name}.nii.gz")).dataobj, np.float32)

        img = nib.load(str(folder / "brain.nii.gz"))
        return cls(arr("displacement_mm"), arr("field_hz"), arr("undistorted_b0"),
                   arr("brain") > 0.5, img.affine,
                   json.loads((folder / "truth.json").read_text())["pe_axis"])


def _check_grid(affine: np.ndarray, shape: tuple[int, ...], stored: nib.Nifti1Image,
                where: Path) -> None:
    if tuple(shape[:3]) != tuple(stored.shape[:3]) or not np.allclose(
            affine, stored.affine, atol=GRID_TOLERANCE_MM):
        raise InputError(where, "the simulator no longer makes this cohort's b=0 grid; "
                                "regenerate the cohort with this version")


def mean_b0(data: np.ndarray, bvals: np.ndarray) -> np.ndarray:
    data = np.asarray(data, np.float32)
    return data if data.ndim == 3 else data[..., bvals <= B0_THRESHOLD].mean(axis=3)


def kind_of(root: Path) -> str:
    """``demo`` or ``pseudo-dwi``, from the cohort's dataset_description.json."""
    path = root / "dataset_description.json"
    if not path.is_file():
        raise InputError(root, "no dataset_description.json: not a cohort written by "
                               "mri2mri-data")
    desc = json.loads(path.read_text())
    sim = desc.get("SimulationParameters", {})
    if "epi" not in sim:
        raise InputError(path, "not a cohort with an EPI b=0 (mri2mri-data demo --epi, or "
                               "mri2mri-data pseudo-dwi): its true field is unknown")
    return "pseudo-dwi" if "b0_volumes" in sim else "demo"


def demo_config(description: dict, where: Path) -> object:
    """The `DemoConfig` that wrote a demo cohort, checked against its recorded parameters."""
    from mri2mri.data.simulate import demo_cohort as dc
    from mri2mri.data.simulate.epi import EpiProtocol
    from mri2mri.data.simulate.head import HeadLayers
    from mri2mri.data.simulate.shift import AcquisitionShift
    from mri2mri.data.simulate.variety import Variety

    sim = description["SimulationParameters"]
    cfg = dc.DemoConfig(
        subjects=sim["subjects"], seed=sim["seed"], resolution=float(sim["resolution"]),
        shift=AcquisitionShift(**sim["shift"]) if "shift" in sim else None,
        head=HeadLayers() if "head" in sim else None, epi=EpiProtocol(),
        variety=Variety(**sim["variety"]) if "variety" in sim else None,
        contrasts=tuple(sim["contrasts"]) if sim.get("contrasts") else None)
    remade = dc._dataset_description(cfg, {})["SimulationParameters"]
    if json.loads(json.dumps(remade)) != sim:
        raise InputError(where, "this cohort's simulation parameters are not the defaults "
                                "this benchmark can remake (head, EPI protocol)")
    return cfg


def demo_truth(root: Path, subject: str) -> Truth:
    """The demo cohort's subject: its field remade, and the subject simulated without it."""
    from mri2mri.data.simulate import demo_cohort as dc
    from mri2mri.data.simulate.epi import (
        MNI_HOTSPOTS,
        block_mean,
        epi_grid,
        fine_grid,
        off_resonance_hz,
        oversampling,
    )
    from mri2mri.data.simulate.fields import grid_points
    from mri2mri.data.simulate.variety import SubjectVariety

    description = json.loads((root / "dataset_description.json").read_text())
    cfg = demo_config(description, root / "dataset_description.json")
    index = int(subject.removeprefix("sub-")) - 1
    template = dc.load_template(cfg.head)
    protocol = dc._epi_protocol(cfg)
    # The draws of demo_cohort._epi_dwi, in its order (the subject's EPI stream).
    erng = np.random.default_rng([cfg.seed, index, 2])
    tilt = float(erng.uniform(*protocol.tilt_deg))
    centre = ((template.box_lo + template.box_hi) / 2 + erng.uniform(-5, 5, 3)
              + [0.0, 0.0, protocol.slab_offset_mm])
    shape, affine = epi_grid(centre, protocol, tilt)
    os_ = oversampling(np.array(protocol.voxel_mm), max(cfg.resolution, 1.0), protocol.pe_axis)
    fshape, faffine = fine_grid(shape, affine, os_)
    peak_hz = float(erng.uniform(*protocol.frontal_peak_hz))
    hz = off_resonance_hz(grid_points(fshape, faffine), list(MNI_HOTSPOTS), peak_hz=peak_hz,
                          protocol=protocol, rng=erng, box=(template.box_lo, template.box_hi))
    hz = block_mean(hz.reshape(fshape), os_)
    dwi_path = root / subject / "dwi" / f"{subject}_dwi.nii.gz"
    _check_grid(affine, shape, nib.load(str(dwi_path)), dwi_path)
    recorded = description["SubjectParameters"][subject]["epi"]["frontal_peak_hz"]
    if abs(recorded - peak_hz) > 1e-3:
        raise InputError(dwi_path, "the simulator no longer draws this subject's field")
    still = replace(cfg, epi=replace(cfg.epi, total_readout_time=0.0))
    images, _ = dc.simulate_subject(template, still, index)
    bvals = np.asarray(cfg.bvalues, float)
    _, _, anatomy = dc.subject_anatomy(template, cfg, index)
    anatomy = SubjectVariety.draw(cfg.variety, [cfg.seed, index, 3], template,
                                  cfg.scanner()).anatomy(anatomy)
    frac = anatomy.fractions(grid_points(shape, affine))
    brain = sum(v for k, v in frac.items() if k not in ("csf", "bone", "muscle", "fat"))
    mm = protocol.pe_sign * hz * protocol.total_readout_time * protocol.voxel_mm[protocol.pe_axis]
    return Truth(mm.astype(np.float32), hz.astype(np.float32),
                 mean_b0(np.asarray(images["dwi"].dataobj), bvals),
                 np.asarray(brain).reshape(shape) > 0.5, affine, protocol.pe_axis)


def _source_pairs(source: Path) -> list[tuple[str, Path, Path]]:
    """(subject, T1w, T2w) in the order `mri2mri-data pseudo-dwi` numbered them."""
    from mri2mri.data.cohort import Cohort

    return [(s.id, s.path("T1w"), s.path("T2w")) for s in Cohort.discover(source).subjects
            if s.has("T1w", "T2w")]


def pseudo_dwi_truth(root: Path, subject: str, source: Path) -> Truth:
    """A pseudo-DWI subject: `pseudo_b0` remade on its source T2w, with and without the field."""
    from mri2mri.data.simulate.epi import EpiProtocol, pseudo_b0
    from mri2mri.runtime.imaging.normalize import foreground_mask
    from mri2mri.runtime.imaging.resample import resample_to

    description = json.loads((root / "dataset_description.json").read_text())
    sim = description["SimulationParameters"]
    protocol = EpiProtocol(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in sim["epi"].items()})
    if json.loads(json.dumps(asdict(protocol))) != sim["epi"]:
        raise InputError(root, "this cohort's EPI protocol cannot be remade")
    pairs = _source_pairs(source)
    index = next((i for i, (s, _, _) in enumerate(pairs) if s == subject), None)
    if index is None:
        raise InputError(source, f"{subject} (with a T1w and a T2w) is not in the source "
                                 "dataset: --source must be the folder the cohort was made from")
    t2w = nib.load(str(pairs[index][2]))
    epi = pseudo_b0(t2w, np.random.default_rng([sim["seed"], index]), protocol,
                    volumes=sim["b0_volumes"])
    dwi_path = root / subject / "dwi" / f"{subject}_dwi.nii.gz"
    stored = nib.load(str(dwi_path))
    _check_grid(epi.image.affine, epi.image.shape, stored, dwi_path)
    remade = np.clip(np.round(epi.image.get_fdata()), 0, 32767)
    if not np.array_equal(remade, np.asarray(stored.dataobj, np.float64)):
        raise InputError(dwi_path, "the remade b=0 differs from the stored one: wrong --source, "
                                   "or a simulator that changed since the cohort was made")
    still = pseudo_b0(t2w, np.random.default_rng([sim["seed"], index]),
                      replace(protocol, total_readout_time=0.0), volumes=sim["b0_volumes"])
    undistorted = np.clip(np.round(still.image.get_fdata()), 0, 32767).mean(axis=3)
    brain_img = nib.Nifti1Image(foreground_mask(np.asarray(t2w.dataobj, np.float32))
                                .astype(np.float32), t2w.affine)
    brain = np.asarray(resample_to(brain_img, stored).dataobj) > 0.5
    mm = epi.shift_voxels * protocol.voxel_mm[protocol.pe_axis]
    return Truth(mm.astype(np.float32), epi.field_hz.astype(np.float32),
                 undistorted.astype(np.float32), brain, stored.affine, protocol.pe_axis)


def subject_truth(root: Path, subject: str, cache: Path, source: Path | None = None) -> Truth:
    """The subject's truth from `cache` (``OUT/truth/sub-*``), made and saved on first use."""
    folder = cache / subject
    if (folder / "truth.json").is_file():
        return Truth.load(folder)
    kind = kind_of(root)
    if kind == "pseudo-dwi":
        if source is None:
            raise InputError(root, "a pseudo-DWI cohort's truth needs --source (the real "
                                   "T1w/T2w dataset it was made from)")
        truth = pseudo_dwi_truth(root, subject, source)
    else:
        truth = demo_truth(root, subject)
    stored = nib.load(str(root / subject / "dwi" / f"{subject}_dwi.nii.gz"))
    header = image_like(stored.header, np.zeros(stored.shape[:3], np.float32)).header
    truth.save(folder, header)
    return truth
