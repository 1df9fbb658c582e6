"""Pseudo-DWI cohorts from real T1w/T2w pairs: the T1w as it is, a b=0 EPI made from the T2w.

A b=0 image is a T2-weighted spin echo read out by EPI, so a real T2w passed
through the EPI model (`mri2mri.data.simulate.epi.pseudo_b0`) gives a b=0 with real
anatomy and contrast and simulated EPI geometry, noise and ghosting. Without
`distortion` (``--no-distortion``) the read-out time is 0: the same b=0, undistorted. The DWI
lies in the T2w's world space, so the unmoved T1w/b=0 pair is aligned up to the
EPI distortion (and the T1w/T2w co-registration of the source), which is what the
registration benchmark's known-truth protocol assumes.

Only b=0 volumes are written (their mean is what `mri2mri.data.cohort` reads as
``b0``); no diffusion-weighted volume is made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.bids.names import (
    dataset_description,
    dataset_name,
    generated_by,
    sidecar_path,
    split_name,
    write_dataset_files,
)
from mri2mri.runtime.core.atomic import atomic_dir, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.parallel import map_jobs

from .epi import EpiProtocol, pseudo_b0

README = """# mri2mri pseudo-DWI cohort

Written by `mri2mri-data pseudo-dwi`: each subject's real T1w, copied unchanged,
and a DWI whose b=0 volumes were simulated from the subject's real T2w by the EPI
model of `mri2mri.data.simulate.epi` (distortion along the phase-encoding axis,
IXI-like grid and k-space coverage, Nyquist ghost, Rician noise). The DWI is in
the T2w's world space. `dataset_description.json` holds every parameter. The
source images keep their own licence: see the source dataset.
"""
README_UNDISTORTED = """
Made with `--no-distortion`: a TotalReadoutTime of 0, so no off-resonance displacement
moves the b=0 (everything else, grid, k-space coverage, ghost and noise, as above). The
T1w/b=0 pair is aligned up to the source's T1w/T2w co-registration: what a model that
synthesizes an undistorted b=0 from a T1w (`T1w-to-b0`) is scored against.
"""


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(subject, T1w, T2w) of every subject that has both."""
    from mri2mri.data.cohort import Cohort

    found = []
    for sub in Cohort.discover(root).subjects:
        if sub.has("T1w", "T2w"):
            found.append((sub.id, sub.path("T1w"), sub.path("T2w")))
    if not found:
        raise InputError(root, "no subject has both a T1w and a T2w image")
    return found


def _subject(args: tuple[str, str, str, str, int, int, EpiProtocol, int]) -> tuple[str, dict]:
    """One subject: copy its T1w, simulate and write its b=0 series; return the drawn values."""
    sub, t1, t2, out, seed, index, protocol, volumes = args
    root = Path(out)
    epi = pseudo_b0(nib.load(t2), np.random.default_rng([seed, index]), protocol,
                    volumes=volumes)
    anat, dwi = root / sub / "anat", root / sub / "dwi"
    anat.mkdir(parents=True)
    dwi.mkdir(parents=True)
    _, extension = split_name(t1)
    shutil.copyfile(t1, anat / f"{sub}_T1w{extension}")
    sidecar = sidecar_path(t1)
    if sidecar.is_file():
        shutil.copyfile(sidecar, anat / f"{sub}_T1w.json")
    data = np.clip(np.round(epi.image.get_fdata()), 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(data, epi.image.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(epi.image.affine, code=1)
    img.set_sform(epi.image.affine, code=1)
    nib.save(img, str(dwi / f"{sub}_dwi.nii.gz"))
    n = data.shape[3]
    (dwi / f"{sub}_dwi.bval").write_text(" ".join(["0"] * n) + "\n")
    (dwi / f"{sub}_dwi.bvec").write_text("\n".join(" ".join(["0"] * n) for _ in range(3)) + "\n")
    meta = {"EchoTime": 0.1, "RepetitionTime": 12.0, "PulseSequenceType":
            "single-shot spin-echo EPI (simulated from the T2w)", "Simulated": True,
            **protocol.sidecar()}
    write_json(dwi / f"{sub}_dwi.json", meta, sort_keys=True)
    params = {k: v for k, v in epi.parameters.items() if k != "protocol"}
    params["noise_sigma"] = round(epi.sigma, 4)
    params["source_T2w"] = Path(t2).name
    return sub, params


def make_pseudo_dwi(source: str | Path, out_dir: str | Path, *, seed: int = 0,
                    b0_volumes: int = 2, protocol: EpiProtocol | None = None,
                    distortion: bool = True, jobs: int = 1, overwrite: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a BIDS cohort of real T1w and pseudo-b=0 DWIs made from real T2w; deterministic.
    Without `distortion`, `protocol` with a TotalReadoutTime of 0 (an undistorted b=0).

    Built in a hidden sibling folder and renamed into place: an interrupted run
    leaves nothing behind.
    """
    source, out = Path(source), Path(out_dir)
    protocol = protocol if protocol is not None else EpiProtocol()
    if not distortion:
        protocol = replace(protocol, total_readout_time=0.0)
    if not source.is_dir():
        raise InputError(source, "is not a folder")
    if b0_volumes < 1:
        raise InputError(None, "--b0-volumes must be at least 1")
    if not out.parent.is_dir():
        raise InputError(out, f"parent directory {out.parent} does not exist")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "exists and is not empty; pass --overwrite to replace it")
    if out.resolve() == source.resolve():
        raise InputError(out, "is the source dataset")
    pairs = _pairs(source)
    with atomic_dir(out) as tmp:
        tasks = [(sub, str(t1), str(t2), str(tmp), seed, i, protocol, b0_volumes)
                 for i, (sub, t1, t2) in enumerate(pairs)]
        params = dict(map_jobs(_subject, tasks, jobs, progress))
        description = dataset_description(
            "mri2mri pseudo-DWI cohort", "raw",
            [generated_by("mri2mri", "mri2mri-data pseudo-dwi: real T1w, b=0 simulated from "
                                     "the real T2w by an EPI model")],
            SourceDatasetName=dataset_name(source),
            SimulationParameters={"seed": seed, "b0_volumes": b0_volumes,
                                  "epi": asdict(protocol)},
            SubjectParameters=params)
        write_dataset_files(tmp, description, readme=README + (
            "" if protocol.total_readout_time > 0 else README_UNDISTORTED))
        (tmp / "participants.tsv").write_text(
            "participant_id\n" + "".join(f"{s}\n" for s in sorted(params)))
    return out


def describe(out: Path) -> str:
    """One line about a written cohort (for the command's output)."""
    desc = json.loads((out / "dataset_description.json").read_text())
    return f"wrote {len(desc['SubjectParameters'])} subjects to {out}"
