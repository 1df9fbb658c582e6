"""The one progress bar of every mri2mri command: rich, on stderr, only on a terminal."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Shortest time between two redraws (s): a caller may update thousands of times.
REDRAW_INTERVAL = 0.1


class _Bar(Progress):
    """A `Progress` redrawn on its changes (at most every REDRAW_INTERVAL), without a thread."""

    _drawn = -math.inf

    def update(self, task_id: TaskID, *, refresh: bool = False, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._redraw(refresh)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._redraw(False)

    def _redraw(self, now: bool) -> None:
        clock = time.monotonic()
        if now or clock - self._drawn >= REDRAW_INTERVAL:
            self.refresh()
            self._drawn = clock


def progress_bar(*columns: str | ProgressColumn, console: Console | None = None) -> Progress:
    """A transient bar: description, bar, done/total, `columns`, elapsed and remaining time.

    `columns` are extra columns; a string is a rich format of the task, e.g.
    ``"loss {task.fields[loss]:.4f}"`` (pass the field to ``add_task``/``update``).
    The bar goes to stderr (stdout stays for results), draws only when that is a
    terminal (logs and pipes get no control codes) and vanishes when done. It has
    no auto-refresh: that would run a background thread, and a thread alive while
    the caller starts worker processes is how forked children deadlock (see
    `mri2mri.runtime.core.parallel`); it is redrawn on each update instead.
    """
    console = console if console is not None else Console(stderr=True)
    extra = [TextColumn(c) if isinstance(c, str) else c for c in columns]
    return _Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                auto_refresh=False, disable=not console.is_terminal)
