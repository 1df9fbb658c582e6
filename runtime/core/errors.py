"""One exception type for everything a user can get wrong, so CLIs print one line and exit 1
(and one warning type for input that is usable but odd)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def exception_summary(exc: BaseException, limit: int = 160) -> str:
    """First line of an exception's message (or its type), short enough for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class InputError(ValueError):
    """Bad input: a file that cannot be used, with the file named in the message."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self) -> tuple[type[InputError], tuple[Path | None, str]]:
        # Rebuilt from (path, problem), not from the formatted message: an InputError
        # raised in a worker process arrives whole in the parent.
        return type(self), (self.path, self.problem)


def require_module(module: str, extra: str, purpose: str) -> None:
    """Fail before any work, in one line, when an optional dependency is not installed.

    `extra` names the pyproject extra that brings it (``pip install 'mri2mri[extra]'``).
    """
    if importlib.util.find_spec(module) is None:
        raise InputError(None, f"{purpose} needs {module}, which is not installed: "
                               f"pip install 'mri2mri[{extra}]'")


class InputWarning(UserWarning):
    """Input that can be used, with something the user should know (the file named).

    `mri2mri.runtime.core.cli_common.run_app` prints it as one ``warning: <file>: <text>`` line.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
