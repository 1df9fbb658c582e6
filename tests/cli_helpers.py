"""Run a typer app in-process as its console script would, and get its exit code."""

from __future__ import annotations

import typer

from mri2mri.runtime.core.cli_common import run_app


def exit_code(app: typer.Typer, args: list[str]) -> int:
    """The exit code of ``app`` given ``args`` (typer reports success as SystemExit(0) too)."""
    try:
        run_app(app, args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
