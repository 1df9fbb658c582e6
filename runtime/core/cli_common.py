"""What every mri2mri command shares: one-line errors with a non-zero exit code."""

from __future__ import annotations

import sys
import warnings
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
