"""The one JSON writer and the atomic-output helpers (runtime/core/atomic.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mri2mri.runtime.core.atomic import atomic_dir, write_json
from mri2mri.runtime.core.errors import InputError


def test_write_json_format_and_return(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    assert write_json(path, {"b": 1, "a": [1, 2]}) == path
    text = path.read_text()
    assert text == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    write_json(path, {"b": 1, "a": 2}, sort_keys=True)
    assert list(json.loads(path.read_text())) == ["a", "b"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_write_json_converts_with_default(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"v": np.float32(1.5)}, default=float)
    assert json.loads(path.read_text()) == {"v": 1.5}


def test_write_json_failure_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"old": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_write_json_overwrite_and_missing_folder(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", [1])
    with pytest.raises(InputError, match="output exists"):
        write_json(path, [2], overwrite=False)
    with pytest.raises(InputError, match="does not exist"):
        write_json(tmp_path / "missing" / "x.json", [1])
    assert json.loads(path.read_text()) == [1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_tensorrt_build_times_are_written_with_write_json(tmp_path: Path) -> None:
    from mri2mri.runtime.engine.tensorrt import BUILD_TIMES, _history, record_build

    record_build(tmp_path, "small|b1-8", 12.34)
    record_build(tmp_path, "reference|b1-8", 60.0)
    assert _history(tmp_path) == {"small|b1-8": 12.3, "reference|b1-8": 60.0}
    assert (tmp_path / BUILD_TIMES).read_text().startswith('{\n  "reference|b1-8": 60.0,')


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    with atomic_dir(out) as tmp:
        assert tmp != out and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
