"""`mri2mri-bench generalisation`: models and LUT scored on cohorts from another 'scanner'."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np
from test_train_cohort import tiny_cohort_dir, tiny_run
from typer.testing import CliRunner

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.generalisation.report import markdown_table, recipe_of
from mri2mri.runtime.core.errors import InputError


def _inverted_t1w(src, dst):
    """The same subjects with a T1w whose tissue contrast is reversed inside the head."""
    shutil.copytree(src, dst)
    for path in dst.glob("sub-*/anat/*_T1w.nii.gz"):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        head = data > 0.1 * data.max()
        data[head] = data.max() * 1.1 - data[head]
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    return dst


def test_scores_drop_on_a_reversed_contrast(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    data = tiny_cohort_dir(tmp_path_factory)
    shifted = _inverted_t1w(data, tmp_path / "inverted")
    run_dir = tmp_path / "default-s0"
    shutil.copytree(run.out_dir, run_dir)
    out = tmp_path / "bench"
    args = ["generalisation", "--run", str(run_dir), "--cohort", f"same={data}",
            "--cohort", f"inverted={shifted}", "--out", str(out)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {r["cohort"] for r in rows} == {"same", "inverted"}
    assert {r["method"] for r in rows} == {"model", "lut"}
    assert len(rows) == 2 * 2 * 5  # two cohorts, two methods, five subjects

    def mean(cohort, method):
        return np.mean([float(r["psnr"]) for r in rows
                        if (r["cohort"], r["method"]) == (cohort, method)])

    # The LUT maps intensities: a reversed contrast must hurt it badly.
    assert mean("inverted", "lut") < mean("same", "lut") - 3
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    assert "| recipe (seeds) | same | inverted |" in table and "default (1)" in table
    # Scores already in scores.csv are reused: an unreadable checkpoint is not opened again ...
    (run_dir / "best.pt").write_bytes(b"not a checkpoint")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert list(csv.DictReader((out / "scores.csv").open())) == rows
    # ... but a new cohort needs it.
    more = CliRunner().invoke(app, args + ["--cohort", f"copy={data}"])
    assert more.exit_code != 0 and isinstance(more.exception, InputError)


def test_recipe_table_pairs_seeds():
    summary = {f"{r}-s{s}": {"c": {"model": {"psnr": base + s}, "lut": {"psnr": 10.0}}}
               for r, base in (("old", 20.0), ("new", 21.0)) for s in (0, 1, 2)}
    assert recipe_of("new-s2") == ("new", 2) and recipe_of("plain") == ("plain", 0)
    table = markdown_table(summary, ["c"], reference="old")
    assert "| new (3) | 22.00 ± 1.00 |" in table
    assert "| old (3) | 21.00 ± 1.00 |" in table
    assert "Δ new − old | 1.00 ± 0.00 |" in table and "LUT baseline (old) | 10.00 ± 0.00" in table
