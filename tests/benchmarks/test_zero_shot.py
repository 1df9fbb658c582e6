"""`mri2mri-bench zero-shot`: one ONNX model on real subjects, scored level-free against the
LUT of the other subjects and the subject's own LUT, both directions of a pair."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import onnx
import pytest
from cli_helpers import exit_code
from onnx import TensorProto, helper

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.generalisation import zero_shot
from mri2mri.benchmarks.generalisation.level_free import REGIONS
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.train.metrics import LEVEL_FREE

SHAPE = (30, 34, 14)


def negator(path, source: str, target: str):
    """A one-source model whose output is 1 minus its input (in the network's space, where
    the source's 99.5th percentile is 1): restored, an affine function of the source with a
    negative gain, above 0 (not clipped) up to 1.5 times that percentile."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    model = helper.make_model(helper.make_graph([helper.make_node("Sub", ["one", "x"], ["y"])],
                                                "negator", [x], [y], [one]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(sources=[source], target=target, pad_multiple=8,
                         normalisation=Normalisation(target_scale=500.0))
    helper.set_model_props(model, meta.to_onnx_props())
    onnx.save(model, str(path))
    return path


def _cohort(root, subjects: int = 3):
    """Skull-stripped 'scanners': a textured T1w in an ellipsoid (0 outside), and a T2w
    that is exactly an offset minus a gain times it, each subject its own gain, offset
    and T1w level. Level-free, minus the T1w *is* the T2w."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = sum(g ** 2 for g in grid) < 0.9
    for i in range(subjects):
        anat = root / f"sub-{i + 1:02d}" / "anat"
        anat.mkdir(parents=True)
        t1 = (1.0 + 0.5 * grid[0] + 0.3 * np.sin(5 * grid[1]) + rng.uniform(0, 0.2, SHAPE))
        t1 *= rng.uniform(200, 2000)
        t2 = rng.uniform(1.2, 3.0) * t1.max() - rng.uniform(0.5, 2.0) * t1
        for name, image in (("T1w", t1), ("T2w", t2)):
            nib.save(nib.Nifti1Image(np.where(brain, image, 0).astype(np.float32),
                                     np.diag([3.0, 3.0, 3.0, 1])),
                     anat / f"sub-{i + 1:02d}_{name}.nii.gz")
    return root


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return _cohort(tmp_path_factory.mktemp("zero-shot") / "real")


@pytest.mark.parametrize("source,target", [("T1w", "T2w"), ("T2w", "T1w")])
def test_zero_shot_scores_every_subject_both_ways(real, tmp_path, source, target, capsys):
    model = negator(tmp_path / "model.onnx", source, target)
    out = tmp_path / "out"
    args = ["zero-shot", "--model", str(model), "--real", str(real), "--out", str(out),
            "--source", source, "--target", target, "--threads", "1"]
    assert exit_code(app, args) == 0
    printed = capsys.readouterr()
    assert "sub-03 (3/3)" in printed.err and "level-free PSNR model" in printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["source"], summary["target"]) == (source, target)
    assert summary["task"] == f"{source}->{target}"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert tuple(rows[0]) == zero_shot.COLUMNS
    assert len(rows) == 3 * len(zero_shot.METHODS) * len(REGIONS)
    subjects = summary["subjects"]
    for row in rows:
        scores = subjects[row["subject"]]["scores"][row["method"]][row["region"]]
        for key in LEVEL_FREE:
            assert float(row[key]) == pytest.approx(scores[key])
        model_row = row["method"] == "model"
        assert (row["disagreement"] != "") == model_row  # the model's OOD figures, its rows
        assert (row["synthesis_seconds"] != "") == model_row
    for entry in subjects.values():
        found = entry["scores"]
        # The model is exact up to gain and offset: level-free, perfect. A LUT of 128
        # bins is not; fitted on the subject itself it is good (the others', T2w -> T1w,
        # also meet each T2w's own offset: the LUT's input is the source over its
        # percentile, which an offset changes).
        assert found["model"]["brain"]["level_free_psnr"] > 80
        assert found["model"]["brain"]["level_free_ssim"] == pytest.approx(1, abs=1e-6)
        assert found["model"]["brain"]["level_free_mae"] < 1e-3
        assert 25 < found["lut_own"]["brain"]["level_free_psnr"] < 80
        assert found["lut_others"]["brain"]["level_free_psnr"] > (25 if source == "T1w" else 10)
        # Level-free PSNR is a function of the correlation, which the subject's own bin
        # means maximise among maps of its bins: the others' LUT is one such map.
        assert found["lut_own"]["brain"]["level_free_psnr"] >= \
            found["lut_others"]["brain"]["level_free_psnr"] - 1e-9
        assert entry["lesion_ml"] == 0 and entry["ood"]["disagreement"]["figure"] is not None
    for method in zero_shot.METHODS:
        values = [float(r["level_free_psnr"]) for r in rows
                  if (r["method"], r["region"]) == (method, "brain")]
        assert summary["mean"][method]["brain"]["level_free_psnr"] == pytest.approx(
            np.mean(values))
        assert summary["mean"][method]["brain"]["subjects"] == 3
    table = (out / "table.md").read_text()
    assert table == zero_shot.table(summary)
    assert "| mean (3) |" in table and "out-of-distribution" in table
    assert "No T2w-bright lesion was found" in table
    assert printed.out.startswith(table.splitlines()[0])


def test_the_lut_of_the_others_never_sees_the_subject(real, tmp_path):
    """`lut_others` is fitted on the other subjects alone, `lut_own` on the subject: give one
    subject's T2w the opposite contrast and its own LUT follows, the others' does not (and
    the others' LUTs, pooling it, get worse)."""
    model = negator(tmp_path / "model.onnx", "T1w", "T2w")
    before = zero_shot.zero_shot(model, real, tmp_path / "a", threads=1)
    changed = tmp_path / "real"
    shutil.copytree(real, changed)
    path = changed / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.where(data > 0, data.max() * 1.5 - data, 0).astype(np.float32),
                             image.affine), path)
    after = zero_shot.zero_shot(model, changed, tmp_path / "b", threads=1)

    def psnr(summary, sid, method):
        return summary["subjects"][sid]["scores"][method]["brain"]["level_free_psnr"]

    assert psnr(after, "sub-01", "lut_own") == pytest.approx(psnr(before, "sub-01", "lut_own"),
                                                             abs=1.0)
    assert psnr(after, "sub-01", "lut_others") < 10 < 25 < psnr(before, "sub-01", "lut_others")
    assert psnr(after, "sub-02", "lut_others") < psnr(before, "sub-02", "lut_others") - 5
    assert psnr(after, "sub-01", "model") < 10  # the model, as the others' LUT, is now wrong


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_real_folder_model_or_direction_is_a_one_line_error(real, tmp_path, capsys):
    model = negator(tmp_path / "model.onnx", "T1w", "T2w")
    base = ["zero-shot", "--model", str(model), "--out", str(tmp_path / "out")]
    assert exit_code(app, [*base, "--real", str(tmp_path / "missing")]) == 1
    assert _error(capsys).startswith(f"error: {tmp_path / 'missing'}: ")
    one = tmp_path / "one"
    shutil.copytree(real / "sub-01", one / "sub-01")
    assert exit_code(app, [*base, "--real", str(one)]) == 1
    assert "needs at least 2 subjects with T1w and T2w" in _error(capsys)
    assert exit_code(app, [*base, "--real", str(real), "--source", "T2w",
                           "--target", "T1w"]) == 1
    assert "translates T1w -> T2w, not T2w -> T1w" in _error(capsys)
    assert exit_code(app, [*base, "--real", str(real), "--source", "flair"]) == 1
    assert _error(capsys).startswith("error: --source flair")
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert exit_code(app, ["zero-shot", "--model", str(model), "--real", str(real),
                           "--out", str(blocked)]) == 1
    assert "exists and is not a directory" in _error(capsys)
    assert not (tmp_path / "out").exists()
