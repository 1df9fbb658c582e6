"""What every mri2mri command shares: one-line errors with a non-zero exit code, and the
BIDS-Apps command line (``BIDS_DIR OUTPUT_DIR participant --participant-label 01 02``) of
`mri2mri-run` and `mri2mri-register --correct-distortion`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from mri2mri.runtime.core.errors import InputError, InputWarning


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app; bad input becomes one line on stderr and exit code 1.

    Usage errors (unknown options, missing arguments) are reported by typer itself
    with exit code 2. An `InputWarning` is one ``warning: ...`` line on stderr (other
    warnings keep Python's format).
    """
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, InputWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            app(args=argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


#: The BIDS-Apps analysis levels mri2mri has.
LEVELS = ("participant",)
#: BIDS-Apps options that take several values (``--participant-label 01 02``).
MULTI_VALUE = ("--participant-label", "--session-label")


def check_bids_app(output_dir: Path | None, analysis_level: str | None, note: str = "") -> None:
    """BIDS_DIR comes with OUTPUT_DIR and a level mri2mri has (`note`: why no other)."""
    if output_dir is None or analysis_level is None:
        raise InputError(None, "BIDS-App mode needs BIDS_DIR OUTPUT_DIR participant")
    if analysis_level not in LEVELS:
        raise InputError(None, f"analysis level {analysis_level!r}: mri2mri has only the "
                               f"participant level{note}")


def expand_multi(argv: list[str]) -> list[str]:
    """``--participant-label 01 02`` -> ``--participant-label 01 --participant-label 02``.

    As in argparse-based BIDS Apps, the values run up to the next option, so put the
    positional arguments first.
    """
    out: list[str] = []
    current = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in MULTI_VALUE else None
            if current is None:
                out.append(arg)
            continue
        if current is not None:
            out += [current, arg]
            continue
        out.append(arg)
    return out
