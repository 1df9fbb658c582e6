"""The one progress bar (runtime/progress.py): no thread, terminal only, extra fields."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from mri2mri.runtime.core.progress import progress_bar


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=100), buffer


def test_bar_draws_on_a_terminal_without_a_thread_and_shows_extra_fields() -> None:
    console, buffer = _console(terminal=True)
    threads = threading.active_count()
    with progress_bar("loss {task.fields[loss]:.3f}", console=console) as bar:
        task = bar.add_task("epoch 1/2", total=10, loss=float("nan"))
        assert threading.active_count() == threads  # no refresh thread
        bar.update(task, advance=3, loss=0.25)
        drawn = buffer.getvalue()
        assert "epoch 1/2" in drawn and "3/10" in drawn and "loss 0.250" in drawn
        bar.update(task, completed=7, loss=0.125)  # within the redraw interval: no redraw
        assert "7/10" not in buffer.getvalue()
        bar.update(task, completed=8, loss=0.0625, refresh=True)
        assert "8/10" in buffer.getvalue() and "loss 0.062" in buffer.getvalue()


def test_bar_is_silent_when_not_a_terminal() -> None:
    console, buffer = _console(terminal=False)
    with progress_bar(console=console) as bar:
        task = bar.add_task("subjects", total=2)
        bar.advance(task)
        bar.update(task, completed=2, refresh=True)
    assert buffer.getvalue() == ""


def test_default_console_is_stderr() -> None:
    assert progress_bar().console.stderr
