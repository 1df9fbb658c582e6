"""What a synthesis run is asked (`RunOptions`) and what each of its units did (`UnitResult`).

The types shared by the command (`cli_run`), the BIDS App (`batch`) and the QC pages
(`mri2mri.runtime.qc.synthesis`). They live here, below all three, so that none of
them imports another only for a type: the pages read results, they never run models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mri2mri.runtime import __version__
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.synthesis.ood_checks import OodChecks

if TYPE_CHECKING:  # hints only: the pages import this module and need no model session
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Every option of a synthesis run, bundled once and passed down as is.

    `mri2mri-run` builds it right after parsing its command line, `synthesize_dataset`
    from its arguments; the model session, every unit and (pickled) every worker read
    the same object. What a dataset run learns on the way (the threads each worker
    gets, the model's SHA-256) goes into a copy (`dataclasses.replace`).
    """

    model: Path
    # The model session.
    device: str = "auto"
    threads: int | None = None  # per session; None: physical cores (split between workers)
    batch_size: int = 8
    trt_cache: bool = True
    # The outputs.
    resample_to_first: bool = False
    overwrite: bool = False
    verbose: bool = False
    # Out-of-distribution checks: the model's disagreement figure (extra network passes),
    # and its threshold when not the model's own (None: the model's).
    ood_check: bool = True
    ood_threshold: float | None = None
    # One subject (--input ... --output FILE): inputs as given, CONTRAST=PATH or PATH.
    inputs: tuple[str, ...] = ()
    output: Path | None = None
    bval: Path | None = None
    # A BIDS dataset (BIDS_DIR OUTPUT_DIR participant).
    bids_dir: Path | None = None
    out_dir: Path | None = None
    participants: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    nprocs: int = 1
    scheduler: str | None = None
    # QC reports: a dataset writes them unless told not to (None: True), one subject only
    # when asked (None: False).
    report: bool | None = None
    command: str | None = None  # recorded in GeneratedBy (default: this process's)
    #: The loaded model's SHA-256: outputs record it, and a rerun skips only its own outputs.
    model_sha256: str = ""

    def wants_report(self) -> bool:
        """QC pages: a dataset writes them unless told not to, one subject only when asked."""
        return self.bids_dir is not None if self.report is None else self.report

    @property
    def report_path(self) -> Path | None:
        """One subject's QC page: beside the output, ``<output stem>_report.html``."""
        if self.output is None:
            return None
        name = self.output.name
        stem = next((name[:-len(s)] for s in (".nii.gz", ".nii") if name.endswith(s)),
                    self.output.stem)
        return self.output.with_name(f"{stem}_report.html")

    @property
    def dataset(self) -> tuple[Path, Path]:
        """(input BIDS dataset, derivative folder) of a dataset run."""
        if self.bids_dir is None or self.out_dir is None:
            raise InputError(None, "--bids and --out are both needed")
        return self.bids_dir, self.out_dir


@dataclass
class UnitResult:
    """What happened to one unit (plain data: it comes back from worker processes)."""

    label: str
    participant: str
    output: Path
    status: str  # written | done | failed
    error: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    provider: str = ""
    execution: dict[str, Any] = field(default_factory=dict)
    #: The b-values of a 4D DWI input given by hand (``--bval``); '' beside BIDS files.
    bvals: str = ""


def ood_checks(synth: Synthesizer, options: RunOptions) -> OodChecks:
    """The out-of-distribution checks of one synthesis, as the options say."""
    return OodChecks(synth.meta, disagreement=options.ood_check, threshold=options.ood_threshold)


def report_params(options: RunOptions, seconds: float) -> dict[str, Any]:
    """The run's parameters, as the QC pages show them."""
    params: dict[str, Any] = {
        "model": options.model.name, "device": options.device,
        "omp_nthreads": options.threads or "auto", "batch_size": options.batch_size}
    if options.bids_dir is not None:
        params |= {"nprocs": options.nprocs, "scheduler": options.scheduler or "none"}
    return params | {
        "overwrite": options.overwrite, "ood_check": options.ood_check,
        "ood_threshold": options.ood_threshold or "the model's",
        "command": options.command, "wall_seconds": round(seconds, 2)}


def run_record(synth: Synthesizer, options: RunOptions, result: UnitResult) -> dict[str, Any]:
    """How an output was made (a sidecar's ``Mri2mri`` block; what a QC page shows)."""
    return {
        "Version": __version__,
        "Task": synth.meta.task,
        "Model": {"File": synth.model_path.name,
                  "Sha256": options.model_sha256 or synth.model_sha256,
                  "TrainingData": synth.meta.training.get("data", "")},
        "Provider": result.provider,
        "Execution": result.execution,
        "OutOfDistribution": result.ood,
        "TimingsSeconds": {k: round(v, 3) for k, v in result.timings.items()},
    }


__all__ = ["RunOptions", "UnitResult", "ood_checks", "report_params", "run_record"]
