"""Starter models: recipes, one command that builds one, and the model it installs runs by name."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mri2mri.runtime.core.errors import InputError
from mri2mri.starters import recipes
from mri2mri.starters.build import build_starter, refresh_starter
from mri2mri.starters.recipes import RECIPES, Recipe


def test_every_recipe_is_simulated_only_and_one_source() -> None:
    assert {"T1w-to-T2w", "T2w-to-T1w", "T1w-to-PDw"} <= set(RECIPES)
    for r in RECIPES.values():
        assert r.name == f"{r.sources[0]}-to-{r.target}" and len(r.sources) == 1
        assert r.train.get("simulated_subjects") == 0  # the cohort itself is simulated
        assert "data" not in r.train and r.variety


def test_cli_lists_recipes_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mri2mri.starters.cli", "recipes"],
                          capture_output=True, text=True, check=True)
    assert all(name in done.stdout for name in RECIPES)
    bad = subprocess.run([sys.executable, "-m", "mri2mri.starters.cli", "build", "T1w-to-CT",
                          "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert "T1w-to-CT" in bad.stderr and "T1w-to-T2w" in bad.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_tiny_recipe_builds_scores_installs_and_runs_by_name(
        tmp_path: Path, demo_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = Recipe("T1w-to-T2w", ("T1w",), "T2w", "a tiny test starter", subjects=5,
                  resolution=6.0, seed=1, variety="starter",
                  train={"epochs": 1, "slices_per_epoch": 16, "batch_size": 4,
                         "simulated_subjects": 0, "threads": 1, "workers": 0})
    monkeypatch.setitem(recipes.RECIPES, "T1w-to-T2w", tiny)
    registry = tmp_path / "registry"
    monkeypatch.setenv("MRI2MRI_MODELS_DIR", str(registry))
    build = build_starter("T1w-to-T2w", tmp_path / "build", real=demo_cohort, install=True,
                          jobs=1)
    assert build.model.is_file() and build.installed == registry / "T1w-to-T2w.onnx"
    card = build.card.read_text()
    for words in ("simulated only", "seed 1", "mri2mri-starter build T1w-to-T2w",
                  "Held-out simulated subjects", "Zero-shot on real scans", "level-free",
                  "max |difference|"):
        assert words in card
    # Held-out scoring never sees a training subject.
    split = json.loads((build.out / "run" / "config.json").read_text())["split"]
    scored = set(build.simulated["subjects"])
    assert scored == set(split["validation"] + split["test"]) and not scored & set(
        split["train"])
    assert set(build.real["subjects"]) == {p.name for p in demo_cohort.glob("sub-*")}
    assert (registry / "T1w-to-T2w.md").read_text() == card
    listed = subprocess.run([sys.executable, "-m", "mri2mri.runtime.synthesis.cli_run",
                             "--list-models"], capture_output=True, text=True, check=True)
    assert "T1w-to-T2w" in listed.stdout and "a tiny test starter" in listed.stdout
    t1 = next(demo_cohort.glob("sub-001/anat/*_T1w.nii.gz"))
    out = tmp_path / "t2.nii.gz"
    subprocess.run([sys.executable, "-m", "mri2mri.runtime.synthesis.cli_run", "--model",
                    "T1w-to-T2w", "--input", f"T1w={t1}", "--output", str(out)],
                   check=True, capture_output=True)
    assert out.is_file()
    # A refresh (OOD references remade, exported, scored, carded again) keeps the network.
    before = build.simulated["mean"]["model"]["brain"]["level_free_psnr"]
    again = refresh_starter(build.out, install=True)
    assert again.real is not None and again.seconds["references"] > 0
    assert again.simulated["mean"]["model"]["brain"]["level_free_psnr"] == \
        pytest.approx(before, abs=1e-4)
    assert {"features", "contrast"} <= set(_ood_keys(again.model))
    assert (registry / "T1w-to-T2w.onnx").read_bytes() == again.model.read_bytes()
    monkeypatch.setitem(recipes.RECIPES, "T1w-to-T2w", replace(tiny, seed=2))
    with pytest.raises(InputError, match="another T1w-to-T2w recipe"):
        refresh_starter(build.out)


def _ood_keys(model: Path) -> list[str]:
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

    return list(Synthesizer(model, device="cpu").meta.ood)
