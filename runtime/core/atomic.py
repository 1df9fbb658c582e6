"""Write files so that a crash or an error never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mri2mri.runtime.core.errors import InputError


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Fail early, before any work, if `path` cannot be written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(path, f"output directory {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(path, "output exists; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    The temporary name keeps the full suffix (``.nii.gz``), so writers that pick a
    format from the extension (nibabel, matplotlib) behave as for the real name.
    """
    path = check_output_path(path, overwrite=overwrite)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty hidden sibling folder; it replaces `path` only if the block succeeds.

    For outputs that are whole folders (a cohort): an interrupted or failed run
    leaves `path` as it was and no half-written folder behind. The caller checks
    beforehand whether `path` may be replaced.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: object, *, overwrite: bool = True,
               sort_keys: bool = False, default: Callable[[object], object] | None = None
               ) -> Path:
    """Write `data` as indented JSON (2 spaces, trailing newline), atomically.

    The one JSON writer of the project: a reader never sees a half-written file,
    and a failed serialisation (an object JSON cannot hold) leaves the old file, if
    any, untouched. `default` converts objects JSON does not know (e.g. ``float`` for
    numpy scalars).
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n"
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)
