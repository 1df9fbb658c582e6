"""The preprocessed slice cache: each subject prepared once, then memory-mapped by every run.

Layout::

    CACHE/<key>/<subject>/sources.npy   (Z, S, H, W) float32, every slice of the subject
                          target.npy    (Z, 1, H, W) float32, normalised by its own scale
                          mask.npy      (Z, H, W) uint8, the first source's foreground
                          lut.npz       the subject's look-up-table statistics (`LUTStats`)
                          entry.json    written last: what the arrays are and came from

``<key>`` hashes what changes the arrays' content: the cache format, the package
version, the source/target contrasts, the normalisation and the slice geometry.
``entry.json`` records the input files' size and mtime, the arrays' shapes and
exact file sizes and the per-slice foreground fraction. An entry whose inputs
changed (stale) or whose files do not match their record (truncated, missing,
damaged header) is rebuilt, with a note; a run never reads arrays it has not
checked. Readers open the ``.npy`` files with ``mmap_mode="r"``: nothing
proportional to the cohort is held in memory.

Torch-free: the preparation needs only the runtime's numpy/nibabel/scipy path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mri2mri.data.cohort import Subject
from mri2mri.runtime import __version__
from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.parallel import process_pool
from mri2mri.runtime.imaging.slicing import SliceGeometry
from mri2mri.runtime.metadata import Normalisation
from mri2mri.runtime.synthesis.ood import summarize_prepared

from .baseline import LUTStats
from .prepare import MIN_FOREGROUND, load_subject

CACHE_FORMAT = 1
ARRAYS = ("sources", "target", "mask")
ENTRY = "entry.json"
#: Subjects a cache-building worker process prepares before fresh ones take over.
BUILDS_PER_WORKER = 4


@dataclass(frozen=True)
class CacheSpec:
    """What a cached subject's arrays depend on, besides its input files."""

    sources: tuple[str, ...]
    target: str
    geometry: SliceGeometry
    method: str
    percentile: float
    mask_fraction: float
    multiple: float = 1.0

    @classmethod
    def of(cls, sources: Sequence[str], target: str, geometry: SliceGeometry,
           norm: Normalisation) -> CacheSpec:
        return cls(tuple(sources), target, geometry, norm.method, norm.percentile,
                   norm.mask_fraction, norm.multiple)

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation(method=self.method, percentile=self.percentile,
                             mask_fraction=self.mask_fraction, multiple=self.multiple)

    def describe(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "package_version": __version__, **asdict(self)}

    @property
    def key(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_fingerprint(subject: Subject, contrasts: Sequence[str]) -> list[list[Any]]:
    """(file, size, mtime_ns) of every input file the subject's arrays are made from."""
    files = [subject.path(c) for c in contrasts]
    if "b0" in contrasts and subject.bvals is not None:
        files.append(subject.bvals)
    rows = []
    for path in files:
        stat = Path(path).stat()
        rows.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return rows


@dataclass
class CachedSubject:
    """A checked cache entry: slice counts, kept slices, scales, and memory-mapped arrays."""

    id: str
    path: Path
    n_slices: int
    height: int
    width: int
    foreground: np.ndarray  # (Z,) fraction of foreground pixels per slice
    target_scale: float
    source_scales: list[float]
    #: `mri2mri.runtime.synthesis.ood.summarize_prepared` of the subject's sources (for the
    #: model card and the run-time "unlike the training data" check).
    summary: dict[str, Any]

    @property
    def keep(self) -> np.ndarray:
        """Indices of the slices used for training (foreground >= MIN_FOREGROUND)."""
        return np.flatnonzero(self.foreground >= MIN_FOREGROUND)

    def array(self, name: str) -> np.ndarray:
        """A read-only memory map of ``sources``, ``target`` or ``mask``."""
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def lut_stats(self) -> LUTStats:
        with np.load(self.path / "lut.npz") as data:
            return LUTStats.from_arrays({k: data[k] for k in data.files})


class CacheProblem(Exception):
    """A cache entry that must not be used (the message says why)."""


class NotCached(CacheProblem):
    """No entry at all: the subject is built for the first time (nothing to report)."""


def _npy_size(path: Path) -> tuple[tuple[int, ...], str, int]:
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unexpected .npy format version {version}")
        shape, _, dtype = readers[version](f)
        return tuple(shape), dtype.str, f.tell()


def read_entry(path: Path, spec: CacheSpec, fingerprint: list[list[Any]]) -> CachedSubject:
    """Check one entry against its record and the inputs; raise `CacheProblem` if unusable
    (`NotCached` if there is no entry)."""
    entry_file = path / ENTRY
    if not entry_file.exists():
        raise NotCached("not cached yet")
    try:
        entry = json.loads(entry_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheProblem(f"unreadable {ENTRY} ({exc})") from None
    if entry.get("key") != spec.key:
        raise CacheProblem("made for another configuration")
    if entry.get("inputs") != fingerprint:
        raise CacheProblem("stale: an input file changed since it was cached")
    for name in ARRAYS:
        file = path / f"{name}.npy"
        expected = entry["arrays"][name]
        try:
            shape, dtype, offset = _npy_size(file)
            size = file.stat().st_size
        except (OSError, ValueError) as exc:
            raise CacheProblem(f"{file.name} is unreadable ({exc})") from None
        if list(shape) != expected["shape"] or dtype != expected["dtype"]:
            raise CacheProblem(f"{file.name} holds {dtype} {list(shape)}, recorded "
                               f"{expected['dtype']} {expected['shape']}")
        if size != offset + expected["bytes"]:
            raise CacheProblem(f"{file.name} is truncated or damaged ({size} bytes, expected "
                               f"{offset + expected['bytes']})")
    if not (path / "lut.npz").exists():
        raise CacheProblem("lut.npz is missing")
    if not isinstance(entry.get("summary"), dict):
        raise CacheProblem("has no training-data summary (made by an older version)")
    z, _, h, w = entry["arrays"]["sources"]["shape"]
    return CachedSubject(entry["subject"], path, z, h, w,
                         np.asarray(entry["foreground"], np.float64),
                         float(entry["target_scale"]), list(entry["source_scales"]),
                         entry["summary"])


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    np.save(path, array)
    return {"shape": list(array.shape), "dtype": array.dtype.str, "bytes": int(array.nbytes)}


def build_entry(subject: Subject, spec: CacheSpec, path: Path) -> None:
    """Prepare one subject and write its entry (in a temporary folder renamed into place).

    Runs in a worker process; the caller checks the written entry (`SliceCache.check`).
    """
    fingerprint = input_fingerprint(subject, [*spec.sources, spec.target])
    data = load_subject(subject, spec.sources, spec.target, geometry=spec.geometry,
                        norm=spec.normalisation)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        arrays = {"sources": _save_npy(tmp / "sources.npy", data.prepared.slices),
                  "target": _save_npy(tmp / "target.npy", data.target_slices),
                  "mask": _save_npy(tmp / "mask.npy", data.mask_slices)}
        np.savez(tmp / "lut.npz", **LUTStats.of(data.prepared.slices,
                                                data.target_slices).to_arrays())
        entry = {"subject": subject.id, "key": spec.key, "spec": spec.describe(),
                 "inputs": fingerprint, "arrays": arrays,
                 "foreground": data.foreground_fraction.tolist(),
                 "target_scale": data.target_scale, "source_scales": data.prepared.scales,
                 "summary": summarize_prepared(data.prepared, spec.sources)}
        (tmp / ENTRY).write_text(json.dumps(entry))
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():  # another process put its (identical) entry in place first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class SliceCache:
    """The cache folder for one `CacheSpec`: check entries, build the missing ones."""

    def __init__(self, root: str | Path, spec: CacheSpec) -> None:
        self.spec = spec
        self.root = Path(root) / spec.key
        #: Entries (re)built by this object so far.
        self.built = 0

    def path(self, subject: Subject) -> Path:
        return self.root / subject.id

    def check(self, subject: Subject) -> CachedSubject:
        """The subject's entry if usable, else `CacheProblem` saying why."""
        contrasts = [*self.spec.sources, self.spec.target]
        return read_entry(self.path(subject), self.spec, input_fingerprint(subject, contrasts))

    def ensure(self, subjects: Sequence[Subject], jobs: int = 1,
               note: Callable[[str], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[CachedSubject]:
        """Check every subject's entry; (re)build the unusable ones with `jobs` processes.

        `note(text)` is told what is rebuilt and why; `progress(done, total)` counts builds.
        Processes, not threads: preparing a 1 mm subject allocates and frees a few hundred
        MB, and in a long-lived process that leaves a fragmented heap that grows with the
        number of subjects prepared (measured: the trainer's peak grew 1.2 -> 1.6 GB from
        8 to 64 subjects). Each worker prepares at most `BUILDS_PER_WORKER` subjects and
        all are gone when the cache is ready, so the training process keeps none of it.
        The workers are never forked from the caller (`mri2mri.runtime.core.parallel`), which
        holds torch's thread pools and maybe a progress bar.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / "spec.json", self.spec.describe())
        todo = []
        for subject in subjects:
            try:
                self.check(subject)
            except CacheProblem as problem:
                if note and not isinstance(problem, NotCached):
                    note(f"{subject.id}: {problem}; rebuilding")
                todo.append(subject)
        self.built += len(todo)
        if todo and progress:
            progress(0, len(todo))
        # A fresh pool for every `jobs * BUILDS_PER_WORKER` subjects, rather than
        # ProcessPoolExecutor(max_tasks_per_child=...), which can deadlock with a queue of
        # tasks on Python 3.11-3.14 (cpython#115634).
        per_pool = max(1, jobs) * BUILDS_PER_WORKER
        done = 0
        for start in range(0, len(todo), per_pool):
            for _ in self._build_all(todo[start:start + per_pool], jobs):
                done += 1
                if progress:
                    progress(done, len(todo))
        return [self._checked(s) for s in subjects]

    def _build_all(self, subjects: Sequence[Subject], jobs: int) -> Iterator[Subject]:
        """Build `subjects` in one pool of worker processes (they exit when it is done);
        yields each subject as its entry is written."""
        with process_pool(max(1, min(jobs, len(subjects)))) as pool:
            builds = {pool.submit(build_entry, s, self.spec, self.path(s)): s for s in subjects}
            try:
                for build in as_completed(builds):
                    build.result()
                    yield builds[build]
            except BrokenProcessPool:
                raise InputError(self.root, "a process preparing subjects for the slice cache "
                                            "died (killed: out of memory?); the entries "
                                            "finished so far are kept, rerun to go on") from None
            except BaseException:
                pool.shutdown(cancel_futures=True)  # report now, not after the queue
                raise

    def _checked(self, subject: Subject) -> CachedSubject:
        try:
            return self.check(subject)
        except CacheProblem as problem:  # written a moment ago: the disk lost it
            raise OSError(f"cache entry {self.path(subject)} is unusable right after it was "
                          f"written ({problem})") from None
