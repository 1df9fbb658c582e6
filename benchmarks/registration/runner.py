"""Run the registration benchmark over a cohort: in-process, a process pool, or a Dask cluster.

Every subject is independent, so the unit of work (and of caching) is one
subject: its rows are written to ``OUT/cache/<subject>.json`` as soon as it
finishes, tagged with a fingerprint of the configuration, and a rerun with the
same configuration skips it. An interrupted run therefore resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mri2mri.benchmarks.registration.metrics import METRICS_VERSION, Errors
from mri2mri.benchmarks.registration.motion import (
    DEFAULT_MAX_ROTATION_DEG,
    DEFAULT_MAX_TRANSLATION_MM,
    foreground_centre,
    sample_motion,
)
from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.parallel import process_pool
from mri2mri.runtime.engine.devices import check_device
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.registration import get_settings

from .ants_baseline import available as ants_available
from .methods import ANTS, DIRECT, MASKS, VIA, Ants, DipyDirect, DipyVia
from .protocols import evaluate_pair
from .qc import REPORTS_DIR, write_index, write_pair_report

CACHE_DIR = "cache"
#: The study ran its full DIPY pipeline, ending with a 12-parameter affine; `fast` is rigid.
TRANSFORM_FOR_SETTINGS = {"study": "affine", "fast": "rigid"}


@dataclass
class BenchmarkConfig:
    """Everything that determines the results (and thus the cache fingerprint)."""

    data: str
    model: str | None
    split: str = "test"
    split_seed: int = 0
    seed: int = 0
    settings: str = "fast"
    moving_contrast: str = "T1w"
    static_contrast: str = "b0"
    max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG
    max_translation_mm: float = DEFAULT_MAX_TRANSLATION_MM
    methods: list[str] = field(default_factory=lambda: [DIRECT, VIA, ANTS])
    #: Where the 'via' model runs (`mri2mri.runtime.engine.devices.RUNTIME_DEVICES`).
    device: str = "cpu"
    #: Masks of the DIPY methods (`methods.MASKS`): none, or brain masks of both images.
    masks: str = "none"

    def __post_init__(self) -> None:
        self.moving_contrast = canonical_contrast(self.moving_contrast)
        self.static_contrast = canonical_contrast(self.static_contrast)
        get_settings(self.settings)
        self.device = check_device(self.device)
        if self.masks not in MASKS:
            raise ValueError(f"unknown masks {self.masks!r}; choose from {', '.join(MASKS)}")
        if VIA in self.methods and self.model is None:
            raise InputError(None, "the dipy_via method needs --model")

    @property
    def transform(self) -> str:
        return TRANSFORM_FOR_SETTINGS.get(self.settings, "rigid")

    def fingerprint(self) -> str:
        """Hash of the configuration, the model file's bytes and the metrics' names and version.

        A retrained model, another preset's content, a new metric (whose column cached
        rows would lack) or a metric defined anew starts afresh.
        """
        data = asdict(self)
        if data["device"] == "cpu":  # the default: fingerprints of earlier runs stay valid
            del data["device"]
        data["metrics"] = sorted(Errors.__dataclass_fields__)
        if METRICS_VERSION > 1:  # version 1 was not recorded: its fingerprints stay as they were
            data["metrics_version"] = METRICS_VERSION
        data["dipy_settings"] = get_settings(self.settings).describe()  # the preset's content
        if self.model is not None:
            data["model_sha256"] = hashlib.sha256(Path(self.model).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def subject_rng(seed: int, subject_id: str) -> np.random.Generator:
    """A per-subject generator: the motion of a subject does not depend on which others run."""
    return np.random.default_rng([seed, zlib.crc32(subject_id.encode())])


def _methods(config: BenchmarkConfig) -> list[tuple[str, Callable]]:
    made: list[tuple[str, Callable]] = []
    for name in config.methods:
        if name == DIRECT:
            made.append((name, DipyDirect(config.settings, config.transform, config.masks)))
        elif name == VIA:
            made.append((name, DipyVia(Path(config.model), config.settings, config.transform,
                                       device=config.device, masks=config.masks)))
        elif name == ANTS:
            made.append((name, Ants()))
        else:
            raise ValueError(f"unknown method {name!r}")
    return made


def run_subject(subject: Subject, config: BenchmarkConfig, report_dir: str | None = None
                ) -> list[dict[str, object]]:
    """Load one subject's pair, move the static image, run every method; rows for results.csv.

    With `report_dir`, one QC page per method is written there (`qc.write_pair_report`).
    """
    moving = subject.load(config.moving_contrast)
    static = subject.load(config.static_contrast)
    motion = sample_motion(subject_rng(config.seed, subject.id), foreground_centre(static),
                           config.max_rotation_deg, config.max_translation_mm)
    start, cpu_start = time.perf_counter(), time.process_time()
    on_found = None
    if report_dir is not None:
        params = {"moving contrast": config.moving_contrast,
                  "static contrast": config.static_contrast, "settings": config.settings,
                  "masks": config.masks,
                  "simulated motion (deg, mm)": f"{np.rad2deg(motion.angles).round(2).tolist()}, "
                                                f"{np.round(motion.translation, 2).tolist()}"}

        def on_found(method: str, moved: object, found: np.ndarray, seconds: float) -> None:
            write_pair_report(Path(report_dir), subject.id, method, moving=moving, moved=moved,
                              found=found, seconds=seconds, params=params)

    rows = evaluate_pair(moving, static, motion=motion.matrix, methods=_methods(config),
                         on_found=on_found)
    for row in rows:
        row.update({"subject": subject.id, "moving_contrast": config.moving_contrast,
                    "static_contrast": config.static_contrast, "settings": config.settings,
                    "masks": config.masks if row["method"] != ANTS else "none",
                    "transform": config.transform if row["method"] != ANTS else "rigid",
                    "motion_rotation_deg": float(np.rad2deg(np.abs(motion.angles)).max()),
                    "motion_translation_mm": float(np.abs(motion.translation).max())})
    rows.append({"subject": subject.id, "method": "_subject", "protocol": "",
                 "seconds": time.perf_counter() - start,
                 "cpu_seconds": time.process_time() - cpu_start})
    return rows


def _subject_job(subject: Subject, config: BenchmarkConfig, cache_file: str,
                 report_dir: str | None = None) -> list[dict[str, object]]:
    """Process-pool / Dask entry point: run one subject and write its cache file."""
    rows = run_subject(subject, config, report_dir)
    write_json(cache_file, {"fingerprint": config.fingerprint(), "rows": rows})
    return rows


def load_cached(cache_file: Path, fingerprint: str) -> list[dict[str, object]] | None:
    """Rows of a finished subject, or None when missing, unreadable or from another config."""
    try:
        payload = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return payload["rows"] if payload.get("fingerprint") == fingerprint else None


def select_subjects(config: BenchmarkConfig) -> list[Subject]:
    """The split's subjects that have both contrasts (error if none)."""
    cohort = Cohort.discover(config.data)
    try:
        chosen = cohort.split(config.split, config.split_seed)
    except ValueError as exc:
        raise InputError(config.data, str(exc)) from None
    usable = [s for s in chosen if s.has(config.moving_contrast, config.static_contrast)]
    if not usable:
        raise InputError(config.data, f"no {config.split}-split subject has both "
                                      f"{config.moving_contrast} and {config.static_contrast}")
    return usable


def effective_methods(config: BenchmarkConfig, notes: list[str]) -> BenchmarkConfig:
    """Drop ANTs (with a note) when antspyx is not installed."""
    if ANTS in config.methods and not ants_available():
        notes.append("ANTs baseline skipped: antspyx is not installed "
                     "(pip install 'mri2mri[ants]')")
        config.methods = [m for m in config.methods if m != ANTS]
    return config


def _run_pool(jobs: list[tuple[Subject, str]], config: BenchmarkConfig, workers: int,
              report_dir: str | None = None) -> Iterator[tuple[str, list[dict[str, object]]]]:
    with process_pool(workers) as pool:
        futures = {pool.submit(_subject_job, s, config, f, report_dir): s.id for s, f in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _run_dask(jobs: list[tuple[Subject, str]], config: BenchmarkConfig, address: str,
              report_dir: str | None = None) -> Iterator[tuple[str, list[dict[str, object]]]]:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise InputError(None, "--scheduler needs dask.distributed "
                               "(pip install 'mri2mri[bench]')") from None
    with Client(address) as client:
        futures = {client.submit(_subject_job, s, config, f, report_dir,
                                 key=f"mri2mri-reg-{s.id}-"
                                 f"{config.fingerprint()}", pure=False): s.id for s, f in jobs}
        for future in dask_completed(list(futures)):
            yield futures[future], future.result()


def run_benchmark(config: BenchmarkConfig, out_dir: str | Path, *, jobs: int = 1,
                  scheduler: str | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  reports: bool = False
                  ) -> tuple[list[dict[str, object]], dict[str, object]]:
    """All subjects' rows (cached ones reused) and run information (wall time, notes).

    `reports`: QC pages of the subjects run now in ``OUT/reports/`` and an index of all.
    """
    out_dir = Path(out_dir)
    cache = out_dir / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    report_dir = out_dir / REPORTS_DIR if reports else None
    if report_dir is not None:
        report_dir.mkdir(exist_ok=True)
    where = None if report_dir is None else str(report_dir)
    notes: list[str] = []
    config = effective_methods(config, notes)
    subjects = select_subjects(config)
    fingerprint = config.fingerprint()
    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    todo: list[tuple[Subject, str]] = []
    reused = 0
    for subject in subjects:
        cache_file = cache / f"{subject.id}.json"
        cached = load_cached(cache_file, fingerprint)
        if cached is None:
            todo.append((subject, str(cache_file)))
        else:
            rows.extend(cached)
            reused += 1
    done = reused
    if progress is not None:
        progress("resumed" if reused else "start", done, len(subjects))
    if scheduler is not None:
        results = _run_dask(todo, config, scheduler, where)
    elif jobs > 1 and len(todo) > 1:
        results = _run_pool(todo, config, min(jobs, len(todo)), where)
    else:
        results = ((s.id, _subject_job(s, config, f, where)) for s, f in todo)
    for subject_id, subject_rows in results:
        rows.extend(subject_rows)
        done += 1
        if progress is not None:
            progress(subject_id, done, len(subjects))
    if report_dir is not None:
        write_index(report_dir, [s.id for s in subjects], list(config.methods))
    info = {"wall_seconds": time.perf_counter() - started, "subjects": [s.id for s in subjects],
            "subjects_from_cache": reused, "jobs": jobs, "scheduler": scheduler,
            "notes": notes, "methods": list(config.methods), "fingerprint": fingerprint}
    return rows, info
