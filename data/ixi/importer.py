"""`import_ixi`: the five IXI archives (or folders) -> one BIDS-like mri2mri cohort.

Each subject is written into a hidden temporary folder and renamed into place
with a done marker as its last file, so an interrupted import leaves no partial
subject and a rerun skips the subjects already complete. A subject that fails
is reported and skipped; the others go on.
"""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from mri2mri.runtime.bids.names import sidecar_path
from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError, require_module
from mri2mri.runtime.core.parallel import process_pool

from .layout import LOG_FILE, MARKER, QC_DIR, anat_name, write_dataset_files, write_text
from .names import MODALITIES
from .sources import FileRef, SourceIndex, index_source, read_image

if TYPE_CHECKING:
    from mri2mri.runtime.registration import RegistrationSettings

ANAT_MODALITIES = ("T1", "T2", "PD", "MRA")


@dataclass
class SubjectResult:
    """What happened to one subject."""

    subject: str  # "IXI002" (BIDS label without "sub-")
    site: str = ""
    session: str = ""
    status: str = "imported"  # "imported", "skipped" (already complete) or "failed"
    contrasts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    dwi: dict | None = None
    inputs: list[str] = field(default_factory=list)

    def line(self) -> str:
        head = f"sub-{self.subject}: {self.status}"
        if self.contrasts:
            head += " " + ", ".join(self.contrasts)
        if self.missing:
            head += "; missing " + ", ".join(self.missing)
        return "; ".join([head, *self.messages])


@dataclass
class ImportReport:
    """The outcome of one `import_ixi` call."""

    out: Path
    subjects: list[SubjectResult]
    problems: list[str]  # input-level: names that do not parse, damaged archives
    splits: dict[str, list[str]]

    def with_status(self, status: str) -> list[SubjectResult]:
        return [s for s in self.subjects if s.status == status]

    @property
    def failed(self) -> list[SubjectResult]:
        return self.with_status("failed")

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.with_status(s))} {s}"
                           for s in ("imported", "skipped", "failed"))
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"{counts} subject(s) -> {self.out} (splits: {sizes})"

    def lines(self) -> list[str]:
        return [*self.problems, *(s.line() for s in self.subjects), self.summary()]


@dataclass
class SubjectJob:
    """Everything a worker needs for one subject (picklable)."""

    subject: str
    site: str
    session: str
    anat: dict[str, FileRef]  # IXI modality -> file
    dti: dict[int, FileRef]
    requested: list[str]  # IXI modalities the user gave sources for
    table: tuple[np.ndarray, np.ndarray] | None
    out: Path
    settings: str | RegistrationSettings
    messages: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        return sorted([r.name for r in self.anat.values()] + [r.name for r in self.dti.values()])


def _find_table(dti: Path, bvals: Path | None, bvecs: Path | None) -> tuple[Path, Path]:
    """IXI ships bvals.txt/bvecs.txt separately; also look beside or inside the DTI source."""
    places = [dti] if dti.is_dir() else []
    places.append(dti.parent)
    found = []
    for given, name in ((bvals, "bvals.txt"), (bvecs, "bvecs.txt")):
        path = given or next((p / name for p in places if (p / name).is_file()), None)
        if path is None:
            raise InputError(dti, f"DTI needs the b-table: pass --{name[:-4]} ({name} from the "
                                  "IXI site)")
        found.append(Path(path))
    return found[0], found[1]


def _group(indexes: list[SourceIndex], problems: list[str]) -> dict[str, dict]:
    subjects: dict[str, dict] = {}
    for index in indexes:
        for name, ref in index.images:
            sub = subjects.setdefault(name.subject, {"site": name.site, "session": name.session,
                                                     "anat": {}, "dti": {}, "messages": []})
            if (name.site, name.session) != (sub["site"], sub["session"]):
                sub["messages"].append(f"{ref.name}: site/session {name.site}-{name.session} "
                                       f"differs from {sub['site']}-{sub['session']}")
            slot, key = (sub["dti"], name.volume) if name.modality == "DTI" \
                else (sub["anat"], name.modality)
            if key in slot:
                sub["messages"].append(f"{ref.name}: duplicate of {slot[key].name}; "
                                       "using the first")
                continue
            slot[key] = ref
    return subjects


def _read_all(job: SubjectJob, result: SubjectResult
              ) -> tuple[dict[str, tuple[nib.Nifti1Image, str]], list]:
    anat: dict[str, tuple[nib.Nifti1Image, str]] = {}
    for modality, ref in job.anat.items():
        try:
            img = read_image(ref)
            if img.ndim != 3 and not (img.ndim == 4 and img.shape[3] == 1):
                raise InputError(str(ref), f"expected a 3D image, got shape {img.shape}")
            anat[MODALITIES[modality]] = (img if img.ndim == 3 else img.slicer[..., 0], ref.name)
        except InputError as exc:
            result.messages.append(f"{MODALITIES[modality]} left out: {exc}")
    dti = []
    for number, ref in sorted(job.dti.items()):
        try:
            dti.append((number, read_image(ref), ref.name))
        except InputError as exc:
            result.messages.append(f"dwi left out: {exc}")
            return anat, []
    return anat, dti


def _write_dwi(job: SubjectJob, volumes: list, folder: Path, result: SubjectResult
               ) -> nib.Nifti1Image | None:
    from .dwi import assemble_dwi

    if job.table is None:
        return None
    try:
        series = assemble_dwi(volumes, *job.table)
    except ValueError as exc:
        result.messages.append(f"dwi left out: {exc}")
        return None
    stem = folder / f"sub-{job.subject}_dwi"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(series.image, f"{stem}.nii.gz")
    write_text(Path(f"{stem}.bval"), " ".join(f"{b:g}" for b in series.bvals) + "\n")
    write_text(Path(f"{stem}.bvec"), "\n".join(" ".join(f"{v:g}" for v in row)
                                              for row in series.bvecs) + "\n")
    b0 = series.mean_b0()
    nib.save(b0, str(folder / f"sub-{job.subject}_b0.nii.gz"))
    result.dwi = {
        "volumes": len(series.bvals),
        "source_volumes": series.source_volumes,
        "dropped": [{"volume": d["volume"], "file": d["file"], "reason": d["reason"]}
                    for d in series.dropped],
        "summary": series.summary(),
    }
    write_json(Path(f"{stem}.json"), {
        "SourceFiles": [v[2] for v in volumes],
        "SourceVolumeOfEachVolume": series.source_volumes,
        "DroppedVolumes": series.dropped,
        "Note": ("IXI's bvals.txt/bvecs.txt are written unchanged, matched one to one to "
                 "the kept volumes; b-vectors are as IXI distributes them."),
    })
    if series.dropped:
        result.messages.append("dwi: " + series.summary())
    return b0


def process_subject(job: SubjectJob) -> SubjectResult:
    """Import one subject into ``OUT/sub-<id>`` (atomically); never raises for bad data."""
    from .anat import align_anatomy
    from .qc import write_qc

    result = SubjectResult(job.subject, job.site, job.session, messages=list(job.messages),
                           inputs=job.inputs)
    tmp = job.out / f".tmp-sub-{job.subject}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        anat_images, dti_volumes = _read_all(job, result)
        b0 = None
        if anat_images:
            aligned = align_anatomy(anat_images, settings=job.settings)
            folder = tmp / "anat"
            folder.mkdir(parents=True)
            for contrast, img in aligned.images.items():
                nib.save(img, str(folder / anat_name(job.subject, contrast)))
                write_json(sidecar_path(folder / anat_name(job.subject, contrast)),
                           {"IXIImport": aligned.transforms[contrast]})
        if dti_volumes:
            b0 = _write_dwi(job, dti_volumes, tmp / "dwi", result)
        present = sorted(anat_images) + (["dwi"] if b0 is not None else [])
        result.contrasts = present
        result.missing = [MODALITIES[m] for m in job.requested if MODALITIES[m] not in present]
        if not present:
            raise ValueError("nothing could be imported")
        write_qc(job.out / QC_DIR / f"sub-{job.subject}_qc.png",
                 aligned.images if anat_images else {},
                 reference=aligned.reference if anat_images else "", b0=b0,
                 title=f"sub-{job.subject} ({job.site} {job.session})")
        write_json(tmp / MARKER, asdict(result))
        final = job.out / f"sub-{job.subject}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except Exception as exc:  # a failing subject must not stop the cohort
        result.status = "failed"
        kind = "" if isinstance(exc, (InputError, ValueError)) else f"{type(exc).__name__}: "
        result.messages.append(f"failed: {kind}{exc}")
        if not isinstance(exc, (InputError, ValueError)):
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            result.messages.append(f"at {Path(frame.filename).name}:{frame.lineno}")
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _complete_records(out: Path) -> list[dict]:
    records = []
    for marker in sorted(out.glob(f"sub-*/{MARKER}")):
        try:
            records.append(json.loads(marker.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return records


def import_ixi(*, t1: str | Path | None = None, t2: str | Path | None = None,
               pd: str | Path | None = None, mra: str | Path | None = None,
               dti: str | Path | None = None, bvals: str | Path | None = None,
               bvecs: str | Path | None = None, out: str | Path, jobs: int = 1,
               overwrite: bool = False, settings: str | RegistrationSettings = "fast",
               seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import any subset of the IXI archives/folders into a BIDS-like cohort at `out`.

    Subjects already complete in `out` (same input files) are skipped unless
    `overwrite`. `settings` is the registration preset for T1/MRA -> T2/PD
    (`mri2mri.runtime.registration.SETTINGS`). `progress(done, total)` is called
    as subjects finish.
    """
    given = {"T1": t1, "T2": t2, "PD": pd, "MRA": mra, "DTI": dti}
    given = {k: Path(v) for k, v in given.items() if v is not None}
    if not given:
        raise InputError(None, "give at least one IXI source (--t1, --t2, --pd, --mra, --dti)")
    require_module("matplotlib", "data", "mri2mri-data ixi (its QC pictures)")
    table = None
    if "DTI" in given:
        from .dwi import read_table

        table = read_table(*_find_table(given["DTI"], _opt(bvals), _opt(bvecs)))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a directory")
    indexes = [index_source(path, modality) for modality, path in given.items()]
    problems = list(dict.fromkeys(p for index in indexes for p in index.problems))
    for index in indexes:
        if not index.images:
            problems.append(f"{index.source}: no IXI {index.modality} images found")
    grouped = _group(indexes, problems)
    if not grouped:
        raise InputError(None, "no IXI images found in the given sources: "
                               + "; ".join(problems[:3]))
    out.mkdir(parents=True, exist_ok=True)
    (out / QC_DIR).mkdir(exist_ok=True)
    jobs_todo: list[SubjectJob] = []
    results: list[SubjectResult] = []
    for subject, info in sorted(grouped.items()):
        job = SubjectJob(subject, info["site"], info["session"], info["anat"], info["dti"],
                         [m for m in given if m in MODALITIES], table, out, settings,
                         info["messages"])
        marker = out / f"sub-{subject}" / MARKER
        if marker.exists() and not overwrite:
            try:
                done = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                done = {}
            if done.get("inputs") == job.inputs:
                done["status"], done["messages"] = "skipped", ["already complete"]
                results.append(SubjectResult(**done))
                continue
        jobs_todo.append(job)
    total, finished = len(grouped), len(results)
    if progress:
        progress(finished, total)
    if jobs <= 1 or len(jobs_todo) <= 1:
        for job in jobs_todo:
            results.append(process_subject(job))
            finished += 1
            if progress:
                progress(finished, total)
    else:
        with process_pool(jobs) as pool:
            futures = [pool.submit(process_subject, job) for job in jobs_todo]
            for future in as_completed(futures):
                results.append(future.result())
                finished += 1
                if progress:
                    progress(finished, total)
    results.sort(key=lambda r: r.subject)
    splits = write_dataset_files(out, _complete_records(out), seed=seed)
    report = ImportReport(out, results, problems, splits)
    write_text(out / LOG_FILE, "\n".join(report.lines()) + "\n")
    return report


def _opt(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)
