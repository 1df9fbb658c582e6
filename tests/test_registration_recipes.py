"""`mri2mri-register --via` warns about models trained with a recipe the benchmark found worse."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import onnx
import pytest
from cli_helpers import exit_code
from onnx import helper
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
)

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.registration import recipes
from mri2mri.runtime.registration.cli import app
from mri2mri.runtime.registration.recipes import RecipeRule, lookup, via_recipe_warning

PLAIN = {"augment": {"flip": 0.0, "randomize": 0.0}, "context": 0, "data": "demo-seed5"}
ROBUST = {"augment": {"flip": 0.5, "randomize": 0.7}, "context": 1, "data": "demo-seed5"}
NO_RANDOMIZE = RecipeRule((("target", "==", "T1w"), ("training.augment.randomize", "==", 0.0)),
                          "trained without contrast randomisation")
NO_CONTEXT = RecipeRule((("context", "<", 1), ("training.data", "in", ("demo-seed5",))),
                        "a 2D model of the demo cohort")


def _meta(training: dict, context: int = 0) -> ModelMetadata:
    return ModelMetadata(sources=["b0"], target="T1w", pad_multiple=8, context=context,
                         normalisation=Normalisation(target_scale=1000.0), training=training)


def test_rules_match_on_the_recipe_in_the_metadata() -> None:
    rules = (NO_RANDOMIZE, NO_CONTEXT)
    assert via_recipe_warning(_meta(PLAIN), rules) == "trained without contrast randomisation"
    assert via_recipe_warning(_meta(ROBUST, context=1), rules) is None
    # The first matching rule wins; a later one still matches alone.
    two_d = _meta(ROBUST, context=0)
    assert via_recipe_warning(two_d, rules) == "a 2D model of the demo cohort"
    # A model without the field (exported before it existed) matches no condition on it,
    # except an explicit test for None; ordering a missing value never matches.
    assert via_recipe_warning(_meta({}), (NO_RANDOMIZE,)) is None
    missing = RecipeRule((("training.augment", "==", None),), "no augmentation recorded")
    assert via_recipe_warning(_meta({}), (missing,)) == "no augmentation recorded"
    assert via_recipe_warning(_meta({}), (RecipeRule((("training.epochs", "<", 5),), "x"),)) \
        is None
    assert lookup({"a": {"b": 2}}, "a.b") == 2 and lookup({"a": 1}, "a.b") is None
    with pytest.raises(ValueError, match="unknown operator '~'"):
        RecipeRule((("context", "~", 1),), "x")


def test_the_default_table_is_read_at_call_time(monkeypatch) -> None:
    monkeypatch.setattr(recipes, "VIA_RECIPE_RULES", (NO_RANDOMIZE,))
    assert via_recipe_warning(_meta(PLAIN)) == "trained without contrast randomisation"


def _model(path: Path, training: dict) -> Path:
    channel_picker(path, ["b0"], "T1w", with_metadata=False, pad_multiple=8)
    model = onnx.load(str(path))
    helper.set_model_props(model, _meta(training).to_onnx_props())
    onnx.save(model, str(path))
    return path


def test_cli_prints_the_warning_on_stderr(demo_cohort: Path, tmp_path: Path, monkeypatch,
                                          capsys) -> None:
    monkeypatch.setattr(recipes, "VIA_RECIPE_RULES", (NO_RANDOMIZE,))
    subject = Cohort.discover(demo_cohort).subjects[0]
    nib.save(subject.load("T1w"), tmp_path / "sub-1_T1w.nii.gz")
    nib.save(subject.load("b0"), tmp_path / "sub-1_b0.nii.gz")
    args = ["--moving", str(tmp_path / "sub-1_T1w.nii.gz"),
            "--static", str(tmp_path / "sub-1_b0.nii.gz"), "--via-mask", "none"]
    plain = _model(tmp_path / "plain.onnx", PLAIN)
    assert exit_code(app, [*args, "--via", str(plain), "--out-affine",
                           str(tmp_path / "a.txt")]) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())  # rich wraps long lines
    assert f"warning: {plain}: trained without contrast randomisation" in err
    assert "trained without" not in captured.out
    robust = _model(tmp_path / "robust.onnx", ROBUST)
    assert exit_code(app, [*args, "--via", str(robust), "--out-affine",
                           str(tmp_path / "b.txt")]) == 0
    assert "trained without" not in capsys.readouterr().err


def test_the_benchmarks_findings_warn_about_every_measured_b0_model() -> None:
    """Every b=0 -> T1w recipe the benchmark measured was worse than direct registration."""
    clean = {"data": "mri2mri simulated demo cohort", "augment": {"randomize": 0.7}}
    head = {"data": "mri2mri simulated demo cohort (head, EPI b=0)"}
    assert "skull-free demo cohort" in via_recipe_warning(_meta(clean))
    assert "simulated head with EPI" in via_recipe_warning(_meta(head))
    assert "no b=0 -> T1w model" in via_recipe_warning(_meta({"data": "my-dwi-study"}))
    other = ModelMetadata(sources=["T1w"], target="T2w", pad_multiple=8, context=0,
                          normalisation=Normalisation(target_scale=1000.0), training=clean)
    assert via_recipe_warning(other) is None
