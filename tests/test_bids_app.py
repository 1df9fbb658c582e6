"""`mri2mri-run BIDS_DIR OUTPUT_DIR participant`: sessions and runs, valid derivatives,
skipping finished outputs, a kill in the middle, process pools, Dask, the QC report."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_validation import bids_errors
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)
from test_bad_inputs import run_cli

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis.cli_run import expand_multi
from mri2mri.runtime.synthesis.ood import combine_summaries, summarize_prepared


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dest)


@pytest.fixture(scope="module")
def sessions_dataset(demo_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cohort's first three subjects re-filed with sessions and runs.

    sub-001: ses-1 and ses-2; sub-002: ses-1 with run-1 and run-2; sub-003: ses-1, whose
    "T1w" is in fact the subject's T2w (a wrong input the model must flag).
    """
    root = tmp_path_factory.mktemp("sessions") / "bids"
    subs = sorted(demo_cohort.glob("sub-*"))[:3]

    def put(sub: Path, session: str, entities: str, source: str = "T1w") -> None:
        anat = root / sub.name / session / "anat"
        _link(sub / "anat" / f"{sub.name}_{source}.nii.gz",
              anat / f"{sub.name}_{session}{entities}_T1w.nii.gz")
        (anat / f"{sub.name}_{session}{entities}_T1w.json").write_text(json.dumps(
            {"EchoTime": 0.0046, "RepetitionTime": 0.0098}))

    put(subs[0], "ses-1", "")
    put(subs[0], "ses-2", "")
    put(subs[1], "ses-1", "_run-1")
    put(subs[1], "ses-1", "_run-2")
    put(subs[2], "ses-1", "", source="T2w")
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "sessions", "BIDSVersion": "1.10.0", "Authors": ["t"]}))
    (root / "participants.tsv").write_text("participant_id\nsub-001\nsub-002\nsub-003\n")
    (root / "README.md").write_text("test dataset\n")
    return root


def _summary(demo_cohort: Path) -> dict:
    """The training summary of a T1w model trained on the demo cohort's last three subjects."""
    subjects = Cohort.discover(demo_cohort).subjects[3:]
    summaries = []
    for s in subjects:
        prepared = prepare_sources([s.load("T1w")], SliceGeometry(8), Normalisation(),
                                   names=["T1w"])
        summaries.append(summarize_prepared(prepared, ["T1w"]))
    return combine_summaries(summaries, name="mri2mri simulated demo cohort")


@pytest.fixture(scope="module")
def model(demo_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A T1w->T2w channel picker that carries a training summary (so inputs are checked)."""
    import onnx

    path = channel_picker(tmp_path_factory.mktemp("app_model") / "t1_to_t2.onnx", ["T1w"],
                          "T2w")
    proto = onnx.load(str(path))
    meta = ModelMetadata(sources=["T1w"], target="T2w", pad_multiple=8,
                         normalisation=Normalisation(target_scale=500.0),
                         training={"data": "mri2mri simulated demo cohort",
                                   "subjects": {"train": 3, "validation": 0, "test": 0}},
                         training_summary=_summary(demo_cohort))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_onnx_props())
    onnx.save(proto, str(path))
    return path


EXPECTED = ["sub-001/ses-1/anat/sub-001_ses-1_desc-mri2mri_T2w.nii.gz",
            "sub-001/ses-2/anat/sub-001_ses-2_desc-mri2mri_T2w.nii.gz",
            "sub-002/ses-1/anat/sub-002_ses-1_run-1_desc-mri2mri_T2w.nii.gz",
            "sub-002/ses-1/anat/sub-002_ses-1_run-2_desc-mri2mri_T2w.nii.gz",
            "sub-003/ses-1/anat/sub-003_ses-1_desc-mri2mri_T2w.nii.gz"]


def test_bids_app_sessions_runs_sidecars_validator_report(
        sessions_dataset: Path, model: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "derivatives" / "mri2mri"
    out.parent.mkdir()
    code, stdout, err = run_cli([sessions_dataset, out, "participant", "--model", model,
                                 "--device", "cpu"], capsys)
    assert code == 0, err
    assert "5 written, 0 failed, 1 unlike the training data" in stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == EXPECTED
    # The wrong input (a T2w filed as T1w) is flagged on stderr, in its sidecar and report.
    assert "warning: sub-003_ses-1: unlike the training data: T1w intensity distance" in err
    side = json.loads((out / EXPECTED[4].replace(".nii.gz", ".json")).read_text())
    assert side["Mri2mri"]["OutOfDistribution"]["flagged"] is True
    good = json.loads((out / EXPECTED[2].replace(".nii.gz", ".json")).read_text())
    assert good["Sources"] == ["bids:raw:sub-002/ses-1/anat/sub-002_ses-1_run-1_T1w.nii.gz"]
    assert good["SkullStripped"] is False
    info = good["Mri2mri"]
    assert info["Task"] == "T1w->T2w" and info["Provider"] == "CPU"
    assert info["Execution"]["provider"] == "CPU" and info["Execution"]["device"] == "cpu"
    assert info["Model"] == {"File": "t1_to_t2.onnx",
                             "Sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                             "TrainingData": "mri2mri simulated demo cohort"}
    assert info["OutOfDistribution"]["flagged"] is False
    assert info["OutOfDistribution"]["distances"]["T1w"] < info["OutOfDistribution"]["threshold"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert "Command: " in description["GeneratedBy"][0]["Description"]
    assert description["DatasetLinks"]["raw"] == sessions_dataset.resolve().as_uri()
    src = nib.load(sessions_dataset / "sub-001/ses-2/anat/sub-001_ses-2_T1w.nii.gz")
    np.testing.assert_allclose(nib.load(out / EXPECTED[1]).affine, src.affine)
    assert bids_errors(out) == []
    page = (out / "sub-003.html").read_text()
    assert "unlike the training data" in page and "Model card" in page
    assert (out / "index.html").is_file() and (out / "sub-001.html").is_file()

    # Second run: everything is skipped as finished; a selection with --overwrite redoes it.
    code, stdout, _ = run_cli([sessions_dataset, out, "participant", "--model", model,
                               "--no-report"], capsys)
    assert code == 0 and "0 written, 0 failed, 5 already done" in stdout
    before = (out / EXPECTED[0]).stat().st_mtime_ns
    code, stdout, _ = run_cli(expand_multi([str(sessions_dataset), str(out), "participant",
                                            "--model", str(model), "--participant-label",
                                            "002", "sub-003", "--session-label", "1",
                                            "--overwrite", "--no-report"]), capsys)
    assert code == 0 and stdout.strip().endswith("3 written, 0 failed, 1 unlike the "
                                                 "training data")
    assert (out / EXPECTED[0]).stat().st_mtime_ns == before
    # A run for one participant (a job-array task) keeps the others in the group index.
    code, stdout, _ = run_cli([sessions_dataset, out, "participant", "--model", model,
                               "--participant-label", "001"], capsys)
    assert code == 0 and "0 written, 0 failed, 2 already done" in stdout
    index = (out / "index.html").read_text()
    assert all(f'href="sub-00{i}.html"' in index for i in (1, 2, 3))
    assert index.count("not in this run") == 2
    assert "<td>1</td></tr>" in index  # sub-003's one flagged output
    # Finished outputs of another model are not passed off as this one's.
    other = channel_picker(tmp_path / "other.onnx", ["T1w"], "T2w", target_scale=300.0)
    code, stdout, err = run_cli([sessions_dataset, out, "participant", "--model", other,
                                 "--participant-label", "002", "--no-report"], capsys)
    assert code == 1 and "0 written, 2 failed" in stdout and "made by another model" in err
    code, _, err = run_cli([sessions_dataset, out, "participant", "--model", model,
                            "--participant-label", "009"], capsys)
    assert code == 1 and "no participant sub-009" in err
    code, _, err = run_cli([sessions_dataset, out, "group", "--model", model], capsys)
    assert code == 1 and "only the participant level" in err


def test_expand_multi() -> None:
    assert expand_multi(["b", "o", "participant", "--participant-label", "01", "02", "-m",
                         "x"]) == ["b", "o", "participant", "--participant-label", "01",
                                   "--participant-label", "02", "-m", "x"]


def _flat_dataset(root: Path, n: int, shape: tuple[int, int, int]) -> Path:
    for i in range(n):
        sid = f"sub-{i + 1:02d}"
        (root / sid / "anat").mkdir(parents=True)
        nib.save(nifti(volume(shape, seed=i)), root / sid / "anat" / f"{sid}_T1w.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    return root


def test_kill_mid_run_leaves_no_partial_file_and_rerun_completes(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM (what a batch scheduler sends) after the first output; then a pooled rerun."""
    bids, out = _flat_dataset(tmp_path / "bids", 6, (64, 64, 40)), tmp_path / "out"
    cmd = [sys.executable, "-m", "mri2mri.runtime.synthesis.cli_run", str(bids), str(out),
           "participant", "--model", str(model), "--device", "cpu", "--threads", "1", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("sub-*/anat/sub-*.json")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    finished = list(out.glob("sub-*/anat/sub-*.json"))
    assert 1 <= len(finished) < 6, "the run ended before it could be interrupted"
    temporaries = [p for p in out.rglob(".*") if p.is_file() and p.name != ".bidsignore"]
    assert not temporaries, "temporary files left behind"
    for image in out.rglob("*.nii.gz"):  # any image present is complete
        assert nib.load(image).get_fdata().shape == (64, 64, 40)
    code, stdout, _ = run_cli([bids, out, "participant", "--model", model, "--nprocs", "2",
                               "--omp-nthreads", "1", "--no-report"], capsys)
    assert code == 0
    assert f"{6 - len(finished)} written, 0 failed, {len(finished)} already done" in stdout
    assert len(list(out.glob("sub-*/anat/*_desc-mri2mri_T2w.json"))) == 6


def test_failures_do_not_stop_a_pool_or_a_dask_cluster(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    distributed = pytest.importorskip("distributed")  # the bench extra; CI installs it
    bids = _flat_dataset(tmp_path / "bids", 3, (20, 23, 9))
    broken = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:100])
    code, stdout, err = run_cli([bids, tmp_path / "pool", "participant", "--model", model,
                                 "--nprocs", "2", "--no-report"], capsys)
    assert code == 1 and "2 written, 1 failed" in stdout and "failed sub-02" in err
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        code, stdout, err = run_cli([bids, tmp_path / "dask", "participant", "--model", model,
                                     "--scheduler", cluster.scheduler_address], capsys)
    assert code == 1 and "2 written, 1 failed" in stdout and "sub-02_T1w.nii.gz" in err
    assert sorted(p.name for p in (tmp_path / "dask").glob("sub-*/anat/*.nii.gz")) == [
        "sub-01_desc-mri2mri_T2w.nii.gz", "sub-03_desc-mri2mri_T2w.nii.gz"]
    assert (tmp_path / "dask" / "sub-02.html").read_text().count("failed") >= 1


def test_units_pair_sources_by_entities(tmp_path: Path) -> None:
    """Discovery only looks at names: runs pair with runs, a lone image pairs with all."""
    from mri2mri.runtime.bids.inputs import find_units

    names = ["sub-01/anat/sub-01_run-1_T1w.nii.gz", "sub-01/anat/sub-01_run-2_T1w.nii.gz",
             "sub-01/anat/sub-01_run-1_T2w.nii.gz", "sub-01/anat/sub-01_run-2_T2w.nii.gz",
             "sub-02/anat/sub-02_acq-mp2rage_T1w.nii.gz", "sub-02/anat/sub-02_acq-tse_T2w.nii",
             "sub-03/anat/sub-03_run-1_T1w.nii.gz", "sub-03/anat/sub-03_run-2_T2w.nii.gz",
             "sub-03/anat/sub-03_run-3_T2w.nii.gz", "sub-04/anat/sub-04_T2w.nii.gz",
             "sub-05/anat/sub-05_T1w.json"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_units(tmp_path, ["T1w", "T2w"])
    pairs = {u.label: [p.name for _, p in u.inputs] for u in found.units}
    assert pairs == {
        "sub-01_run-1": ["sub-01_run-1_T1w.nii.gz", "sub-01_run-1_T2w.nii.gz"],
        "sub-01_run-2": ["sub-01_run-2_T1w.nii.gz", "sub-01_run-2_T2w.nii.gz"],
        "sub-02_acq-mp2rage": ["sub-02_acq-mp2rage_T1w.nii.gz", "sub-02_acq-tse_T2w.nii"]}
    assert found.missing == ["sub-03_run-1", "sub-04", "sub-05"]
    assert [u.label for u in find_units(tmp_path, ["T1w", "T2w"], ["01"]).units] == \
        ["sub-01_run-1", "sub-01_run-2"]
