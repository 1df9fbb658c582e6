"""The README's "Layout of the code" names every module of the layered packages."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Layout of the code", 1)[1]
    return section.split("```", 2)[1]


def test_readme_layout_matches_the_tree() -> None:
    block = _layout_block()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    folders = set(re.findall(r"^\s*([\w/-]+/)", block, flags=re.MULTILINE))
    for folder in ("runtime/", "registration/", "train/", "data/", "export/", "demo/",
                   "benchmarks/", "tests/"):
        assert folder in folders, f"{folder} missing from the README layout"
    for package in ("runtime", "runtime/registration", "train"):
        for module in sorted((REPO / package).glob("*.py")):
            if module.stem != "__init__":
                assert module.stem in words, f"{package}/{module.name} missing from the layout"
    for folder in ("runtime", "runtime/registration", "train", "train/data", "export", "demo",
                   "benchmarks", "tests/data/ixi-dti-crop"):
        assert (REPO / folder).is_dir(), f"the layout names {folder}, which does not exist"
