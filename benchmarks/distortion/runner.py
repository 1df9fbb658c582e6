"""Run the distortion benchmark over a cohort, one subject at a time, resumable.

Per subject: the truth (`truth`, made once and kept in ``OUT/truth/``), then every method
(`methods`) on the acquired mean b=0, scored against the truth (`metrics`), and the
no-harm check: our method on the same subject's b=0 simulated without off-resonance,
where the right field is zero. Each method's row goes to
``OUT/cache/<subject>/<method>.json`` tagged with a fingerprint of what that method
depends on (the model's bytes only for the model's rows): a rerun skips it, and a new
model recomputes only its own rows, not the slow baselines.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like, load_volume
from mri2mri.runtime.registration.distortion_field import DEFAULT_FIELD_SETTINGS, FieldSettings
from mri2mri.runtime.registration.distortion_inputs import read_readout

from . import methods as m
from .metrics import field_extent, score, similarity
from .truth import Truth, kind_of, subject_truth

CACHE_DIR, TRUTH_DIR = "cache", "truth"
#: The no-harm row: ours on the subject's b=0 simulated without off-resonance.
NO_HARM = "ours_no_distortion"
#: Bumped when a metric or a method changes: older cached rows are recomputed.
VERSION = 2
#: Rows that depend on the field estimation's settings, and those that depend on the model.
USES_SETTINGS = (m.OURS, m.REFERENCE, NO_HARM)
USES_MODEL = (m.OURS, NO_HARM)


@dataclass
class DistortionConfig:
    """Everything that determines the results (and thus the cache fingerprint)."""

    data: str
    model: str | None
    source: str | None = None
    methods: list[str] = field(default_factory=lambda: list(m.METHODS))
    field_settings: dict = field(default_factory=DEFAULT_FIELD_SETTINGS.describe)
    subjects: list[str] | None = None

    def settings(self) -> FieldSettings:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.field_settings.items()}
        return FieldSettings(**values)

    def rows(self) -> list[str]:
        """The methods whose rows a subject gets: the chosen ones, and the no-harm check
        when ours runs."""
        return [*self.methods, *([NO_HARM] if m.OURS in self.methods else [])]

    def fingerprint(self, method: str) -> str:
        """What `method`'s row depends on: the cohort, the simulator's version, and the
        field settings and the model (its bytes too) where the method uses them."""
        parts = {"data": self.data, "source": self.source, "version": VERSION,
                 "method": method}
        if method in USES_SETTINGS:
            parts["field_settings"] = self.field_settings
        if method in USES_MODEL:
            parts["model"] = self.model
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
        if method in USES_MODEL and self.model is not None and Path(self.model).is_file():
            digest.update(Path(self.model).read_bytes())
        return digest.hexdigest()[:16]


def _inputs(root: Path, subject: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image, int]:
    dwi = root / subject / "dwi" / f"{subject}_dwi.nii.gz"
    b0 = load_volume(dwi, dwi.with_name(f"{subject}_dwi.bval"))
    readout = read_readout(dwi, b0.shape)
    return load_volume(root / subject / "anat" / f"{subject}_T1w.nii.gz"), b0, readout.pe_axis


def _row(method: str, answer: m.Answer, truth: Truth, seconds: float) -> dict:
    """Scores of one answer against `truth` (for the no-harm row: a truth of no displacement,
    and the true undistorted b=0 is what was corrected)."""
    row = {"method": method, **score(answer.positions, truth),
           **similarity(answer.corrected, truth),
           "cpu_s": round(sum(answer.cpu.values()), 3), "wall_s": round(seconds, 3),
           **{f"cpu_{k}_s": round(v, 3) for k, v in answer.cpu.items()}}
    if answer.field_mm is not None:
        row.update(field_extent(answer.field_mm, truth.brain))
    return row


def run_subject(config: DistortionConfig, subject: str, out: Path,
                say: Callable[[str], None], *, skip: tuple[str, ...] = ()) -> list[dict]:
    """The rows of every method not in `skip` for one subject, plus the no-harm row (method
    ``ours_no_distortion``) when ours runs and it is not skipped."""
    root = Path(config.data)
    truth = subject_truth(root, subject, out / TRUTH_DIR,
                          None if config.source is None else Path(config.source))
    t1w, b0, pe_axis = _inputs(root, subject)
    if pe_axis != truth.pe_axis:
        raise InputError(root / subject, "the sidecar's phase-encoding axis is not the "
                                         "simulator's")
    subj = m.Subject(t1w, b0, pe_axis)
    settings = config.settings()
    still = m.Subject(t1w, image_like(b0, truth.undistorted_b0), pe_axis)
    nothing = replace(truth, displacement_mm=np.zeros_like(truth.displacement_mm))
    runs: dict[str, Callable[[], m.Answer]] = {
        m.NONE: lambda: m.none(subj), m.RIGID: lambda: m.rigid(subj),
        m.AFFINE: lambda: m.affine(subj), m.SYN_SDC: lambda: m.syn_sdc(subj, truth.brain),
        m.OURS: lambda: m.ours(subj, config.model, settings),
        m.REFERENCE: lambda: m.reference(subj, truth.undistorted_b0, settings),
        NO_HARM: lambda: m.ours(still, config.model, settings)}
    rows = []
    for method in (x for x in config.rows() if x not in skip):
        say(f"{subject}: " + ("ours on the b=0 without off-resonance (no-harm check)"
                              if method == NO_HARM else method))
        started = time.perf_counter()
        rows.append(_row(method, runs[method](), nothing if method == NO_HARM else truth,
                         time.perf_counter() - started))
        rows[-1]["subject"] = subject
    return rows


def subjects_of(config: DistortionConfig) -> list[str]:
    root = Path(config.data)
    kind_of(root)  # a cohort whose truth can be remade, or a one-line error now
    found = sorted(p.name for p in root.glob("sub-*") if (p / "dwi").is_dir())
    if config.subjects:
        missing = sorted(set(config.subjects) - set(found))
        if missing:
            raise InputError(root, f"no DWI for {', '.join(missing)}")
        found = [s for s in found if s in config.subjects]
    if not found:
        raise InputError(root, "no subject with a DWI")
    return found


def run_benchmark(config: DistortionConfig, out: Path,
                  say: Callable[[str], None] = lambda _m: None) -> list[dict]:
    """Every subject (cached ones reused); all rows."""
    if m.OURS in config.methods and config.model is None:
        raise InputError(None, "the 'ours' method needs --model (a T1w -> b0 model)")
    if m.SYN_SDC in config.methods and not m.ants_available():
        say("note: antspyx is not installed (pip install 'mri2mri[ants]'): syn_sdc skipped")
        config.methods = [x for x in config.methods if x != m.SYN_SDC]
    wanted = config.rows()
    keys = {method: config.fingerprint(method) for method in wanted}  # reads the model once
    rows = []
    for subject in subjects_of(config):
        folder = out / CACHE_DIR / subject
        cached = {}
        for method in wanted:
            path = folder / f"{method}.json"
            stored = json.loads(path.read_text()) if path.is_file() else {}
            if stored.get("fingerprint") == keys[method]:
                cached[method] = stored["row"]
        found = [] if set(wanted) <= set(cached) else run_subject(
            config, subject, out, say, skip=tuple(cached))
        folder.mkdir(parents=True, exist_ok=True)
        for row in found:
            write_json(folder / f"{row['method']}.json",
                       {"fingerprint": keys[row["method"]], "row": row}, default=float)
        rows += [cached.get(x) or next(r for r in found if r["method"] == x) for x in wanted]
    return rows


def to_float(value: object) -> object:
    return float(value) if isinstance(value, np.floating | np.integer) else value
