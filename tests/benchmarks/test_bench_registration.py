"""The registration benchmark: metrics, protocols, statistics, runner (Dask, pool, resume), CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import exit_code
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
)

from mri2mri.benchmarks.cli import app as bench_app
from mri2mri.benchmarks.registration import runner as runner_mod
from mri2mri.benchmarks.registration.methods import DIRECT, VIA, DipyDirect
from mri2mri.benchmarks.registration.metrics import (
    boundary_error,
    errors,
    jenkinson_rms,
    surface_distance,
)
from mri2mri.benchmarks.registration.motion import (
    apply_motion,
    foreground_centre,
    rigid_matrix,
    sample_motion,
    shift_header,
)
from mri2mri.benchmarks.registration.protocols import (
    CONSISTENCY,
    KNOWN_TRUTH,
    evaluate_pair,
    surface_points,
)
from mri2mri.benchmarks.registration.runner import BenchmarkConfig, run_benchmark
from mri2mri.benchmarks.registration.stats import compare
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.registration import Registration
from mri2mri.runtime.registration.io import save_itk

CENTRE = np.array([5.0, -10.0, 20.0])


def test_metrics_of_a_pure_translation() -> None:
    est = rigid_matrix((0, 0, 0), (3.0, -4.0, 0.0))
    points = np.random.default_rng(0).normal(size=(100, 3)) * 50
    e = errors(est, np.eye(4), centre=CENTRE, brain_points=points, surface_points=points,
               surface_normals=np.tile([1.0, 0.0, 0.0], (len(points), 1)))
    assert e.translation_mae_mm == pytest.approx((3 + 4 + 0) / 3)
    assert e.rotation_mae_rad == pytest.approx(0.0, abs=1e-12)
    assert e.mean_displacement_mm == pytest.approx(5.0)
    assert e.jenkinson_rms_mm == pytest.approx(5.0)


def test_metrics_of_a_pure_rotation_about_the_centre() -> None:
    theta = 0.03
    est = rigid_matrix((theta, 0, 0), (0, 0, 0), CENTRE)
    on_axis = CENTRE + np.array([[10.0, 0, 0], [-30.0, 0, 0]])  # the x axis through the centre
    e = errors(est, np.eye(4), centre=CENTRE, brain_points=on_axis, surface_points=on_axis,
               surface_normals=np.tile([0.0, 1.0, 0.0], (2, 1)))
    assert e.translation_mae_mm == pytest.approx(0.0, abs=1e-12)
    assert e.rotation_mae_rad == pytest.approx(theta / 3)
    assert e.mean_displacement_mm == pytest.approx(0.0, abs=1e-12)
    # Sphere of radius R: mean |(R - I) r|^2 = R^2/5 tr((R-I)^T (R-I)) = R^2/5 * 4 (1 - cos).
    assert e.jenkinson_rms_mm == pytest.approx(80 * np.sqrt(4 * (1 - np.cos(theta)) / 5))


def _sphere(radius: float, n: int, seed: int = 0) -> np.ndarray:
    direction = np.random.default_rng(seed).normal(size=(n, 3))
    return CENTRE + radius * direction / np.linalg.norm(direction, axis=1, keepdims=True)


def test_boundary_errors_of_known_transforms() -> None:
    """Zero for the truth; a translation's length; a rotation slides a sphere along itself."""
    surface = _sphere(50.0, 20000)
    normals = (surface - CENTRE) / 50.0
    truth = rigid_matrix((0.02, -0.01, 0.03), (1.0, 2.0, -1.0), CENTRE)
    assert boundary_error(truth, truth, surface) == pytest.approx(0.0, abs=1e-9)
    assert surface_distance(truth, truth, surface, normals) == pytest.approx(0.0, abs=1e-9)
    # Off by a translation of (3, -4, 0) mm after the truth: every point lands 5 mm away,
    # across the sphere by 5 |cos| of the angle to the normal: 2.5 mm on average.
    off = rigid_matrix((0, 0, 0), (3.0, -4.0, 0.0)) @ truth
    assert boundary_error(off, truth, surface) == pytest.approx(5.0)
    assert surface_distance(off, truth, surface, normals) == pytest.approx(2.5, rel=0.02)
    # Off by a rotation of 0.1 rad about the sphere's centre: points move by the chord
    # 2 R sin(theta / 2) sin(polar angle), mean pi/4 of it over the sphere, but the
    # sphere lands on itself: across it, only R (1 - cos) of the chord's curvature.
    spin = rigid_matrix((0.1, 0, 0), (0, 0, 0), CENTRE)
    chord = 2 * 50.0 * np.sin(0.05)
    assert boundary_error(spin, np.eye(4), surface) == pytest.approx(chord * np.pi / 4, rel=0.02)
    assert surface_distance(spin, np.eye(4), surface, normals) < 50.0 * (1 - np.cos(0.1))


def test_surface_points_lie_on_the_masks_outline() -> None:
    import nibabel as nib

    mask = np.zeros((12, 12, 12), bool)
    mask[2:8, 3:9, 4:10] = True  # a 6 x 6 x 6 voxel cube
    img = nib.Nifti1Image(mask.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    points, normals = surface_points(img, mask)
    assert len(points) == 6 ** 3 - 4 ** 3  # the cube less its interior
    assert np.linalg.norm(normals, axis=1) == pytest.approx(1.0)
    face_centre = np.all(points / 2.0 == [2, 5, 6], axis=1) | np.all(points / 2.0 == [2, 6, 7],
                                                                     axis=1)
    assert normals[face_centre] == pytest.approx(np.tile([-1.0, 0, 0], (2, 1)), abs=0.1)
    ijk = points / 2.0
    on_face = ((ijk[:, 0] == 2) | (ijk[:, 0] == 7) | (ijk[:, 1] == 3) | (ijk[:, 1] == 8)
               | (ijk[:, 2] == 4) | (ijk[:, 2] == 9))
    assert on_face.all()


def test_jenkinson_closed_form_matches_sampling_the_sphere() -> None:
    rng = np.random.default_rng(1)
    est = rigid_matrix(rng.uniform(-0.1, 0.1, 3), rng.uniform(-3, 3, 3), CENTRE)
    est[:3, :3] *= 1.02  # an affine, not only rigid
    ref = rigid_matrix(rng.uniform(-0.1, 0.1, 3), rng.uniform(-3, 3, 3), (0, 0, 0))
    direction = rng.normal(size=(400000, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    points = CENTRE + direction * 80 * rng.uniform(0, 1, (400000, 1)) ** (1 / 3)
    pts = np.c_[points, np.ones(len(points))]
    moved = pts @ (np.linalg.inv(ref) @ est).T
    sampled = np.sqrt(np.mean(np.sum((moved - pts)[:, :3] ** 2, axis=1)))
    assert jenkinson_rms(est, ref, CENTRE) == pytest.approx(sampled, rel=5e-3)


def test_sample_motion_stays_within_bounds() -> None:
    rng = np.random.default_rng(0)
    motions = [sample_motion(rng, CENTRE, 4.0, 3.0) for _ in range(200)]
    angles = np.array([m.angles for m in motions])
    shifts = np.array([m.translation for m in motions])
    assert np.abs(angles).max() <= np.deg2rad(4.0) and np.abs(shifts).max() <= 3.0
    assert np.abs(angles).max() > np.deg2rad(3.5) and np.abs(shifts).max() > 2.5
    # The brain centre is the pivot: it moves by the translation only.
    m = motions[0]
    np.testing.assert_allclose(m.matrix @ np.append(CENTRE, 1), np.append(CENTRE + m.translation,
                                                                           1))


def test_statistics_on_a_hand_computable_case() -> None:
    a = np.arange(1.0, 21.0)  # 20 subjects
    b = a / 2 + np.linspace(-0.01, 0.01, 20)
    out = compare(a, b)
    assert out["ratio_of_means"] == pytest.approx(0.5, abs=1e-3)
    assert out["ratio_ci_low"] <= 0.5 <= out["ratio_ci_high"]
    # Every difference has the same sign: W = 0, exact two-sided p = 2 / 2^20.
    assert out["wilcoxon_w"] == 0.0
    assert out["wilcoxon_p"] == pytest.approx(2 / 2 ** 20)
    # Mann-Whitney counts pairs (a_i, b_j) with a_i > b_j, from the sorted samples by hand.
    by_hand = sum(float(x > y) + 0.5 * float(x == y) for x in a for y in b)
    assert out["mann_whitney_u"] == by_hand


def test_protocols_on_a_pair_misaligned_before_the_motion(demo_cohort: Path) -> None:
    """Known truth sees the 3 mm pre-existing offset; consistency (correctly) does not."""
    subject = Cohort.discover(demo_cohort).subjects[2]
    static = subject.load("b0")
    offset = rigid_matrix((0, 0, 0), (3.0, 0.0, 0.0))
    moving = shift_header(subject.load("T1w"), offset)
    motion = rigid_matrix((0.03, 0.0, -0.04), (2.0, -3.0, 1.0), foreground_centre(static))
    rows = evaluate_pair(moving, static, motion=motion, methods=[(DIRECT, DipyDirect())])
    by_protocol = {r["protocol"]: r for r in rows}
    assert by_protocol[KNOWN_TRUTH]["translation_mae_mm"] > 0.8  # ~3 mm on one axis / 3
    assert by_protocol[KNOWN_TRUTH]["mean_displacement_mm"] > 2.0
    assert by_protocol[CONSISTENCY]["translation_mae_mm"] < 0.3
    assert by_protocol[CONSISTENCY]["mean_displacement_mm"] < 0.6
    # The T1w's outline lands ~3 mm off under known truth (the offset), not under consistency.
    assert 2.0 < by_protocol[KNOWN_TRUTH]["boundary_error_mm"] < 4.0
    assert by_protocol[CONSISTENCY]["boundary_error_mm"] < 0.6


def test_itk_file_matches_ants_resampling(demo_cohort: Path, tmp_path: Path) -> None:
    """ANTs, given our ITK file with fixed=static, reslices exactly like `Registration.resample`."""
    ants = pytest.importorskip("ants")  # the optional [ants] extra
    from mri2mri.benchmarks.registration.ants_baseline import to_ants

    subject = Cohort.discover(demo_cohort).subjects[0]
    t1, b0 = subject.load("T1w"), subject.load("b0")
    affine = rigid_matrix((0.05, 0.0, -0.08), (3.0, -4.0, 2.0), foreground_centre(b0))
    save_itk(affine, tmp_path / "t.txt")
    ours = Registration(affine, "rigid", "fast", 0.0, b0.shape, b0.affine, b0.header).resample(t1)
    theirs = ants.apply_transforms(fixed=to_ants(b0), moving=to_ants(t1),
                                   transformlist=[str(tmp_path / "t.txt")],
                                   interpolator="linear").numpy()
    ref = ours.get_fdata()
    inside = ref > 0.05 * ref.max()
    assert np.abs(theirs - ref)[inside].mean() < 0.01 * ref[inside].mean()


@pytest.fixture()
def two_subjects(demo_cohort: Path, tmp_path: Path) -> Path:
    root = tmp_path / "two"
    root.mkdir()
    for sub in Cohort.discover(demo_cohort).ids[:2]:
        shutil.copytree(demo_cohort / sub, root / sub)
    return root


def _cli(args: list[str]) -> int:
    return exit_code(bench_app, args)


def test_dask_then_resume_from_cache_then_pool(two_subjects: Path, tmp_path: Path,
                                               monkeypatch, capsys) -> None:
    distributed = pytest.importorskip("dask.distributed")  # the [bench] extra
    out = tmp_path / "bench"
    config = BenchmarkConfig(data=str(two_subjects), model=None, split="all", seed=3,
                             methods=[DIRECT])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        rows, info = run_benchmark(config, out, scheduler=cluster.scheduler_address)
    assert info["subjects_from_cache"] == 0 and len(info["subjects"]) == 2
    assert sorted((out / "cache").glob("*.json"))[0].name == "sub-001.json"
    first = {(r["subject"], r["protocol"]): r["translation_mae_mm"] for r in rows
             if r["method"] == DIRECT}
    assert len(first) == 4 and all(v < 1.0 for v in first.values())

    # Resume: the CLI finds both subjects cached and only writes the outputs. A run that
    # tried to register again would fail: registration is switched off here.
    def no_registration(*_args, **_kwargs):
        raise AssertionError("a cached subject was registered again")

    monkeypatch.setattr(runner_mod, "run_subject", no_registration)
    monkeypatch.setattr(runner_mod, "ants_available", lambda: False)
    assert _cli(["registration", "--data", str(two_subjects), "--out", str(out), "--split",
                 "all", "--seed", "3", "--no-ants", "--jobs", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects_from_cache"] == 2
    assert summary["results"][KNOWN_TRUTH][DIRECT]["translation_mae_mm"]["n"] == 2
    assert summary["software"]["dipy"] and summary["settings"]["dipy"]["name"] == "fast"
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {(r["subject"], r["protocol"]): float(r["translation_mae_mm"])
            for r in table} == pytest.approx(first)
    assert all(float(r["boundary_error_mm"]) < 1.0 and r["masks"] == "none" for r in table)
    assert summary["results"][KNOWN_TRUTH][DIRECT]["boundary_error_mm"]["n"] == 2
    report = (out / "report.md").read_text()
    mean = summary["results"][KNOWN_TRUTH][DIRECT]["boundary_error_mm"]["mean"]
    assert "boundary error (mm)" in report and f"| {mean:.3f} |" in report
    assert (out / "registration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Runs side by side, from their summary files.
    table_file = tmp_path / "table.md"
    assert _cli(["registration-table", f"seed 3={out}", f"again={out}", "--out",
                 str(table_file)]) == 0
    table_md = table_file.read_text()
    truth = summary["results"][KNOWN_TRUTH][DIRECT]
    for name in ("seed 3", "again"):
        assert (f"| {name} | {DIRECT} | 2 | {truth['translation_mae_mm']['mean']:.3f} | "
                f"{truth['rotation_mae_rad']['mean']:.4f} | "
                f"{truth['boundary_error_mm']['mean']:.3f} |") in table_md
    capsys.readouterr()
    assert _cli(["registration-table", f"x={tmp_path}"]) == 1
    assert "summary.json: not found" in capsys.readouterr().err
    monkeypatch.undo()

    # Another seed is another experiment: nothing is reused; the process pool runs both.
    monkeypatch.setattr(runner_mod, "ants_available", lambda: False)
    assert _cli(["registration", "--data", str(two_subjects), "--out", str(out), "--split",
                 "all", "--seed", "4", "--jobs", "2", "--reports"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects_from_cache"] == 0 and summary["jobs"] == 2
    # QC pages of the subjects run now (in the pool workers), and an index linking them.
    index = (out / "reports" / "index.html").read_text()
    for sub in ("sub-001", "sub-002"):
        page = (out / "reports" / f"{sub}_{DIRECT}.html").read_text()
        assert f'href="{sub}_{DIRECT}.html"' in index
        assert "flicker" in page and "edges of the static image" in page
        assert page.count("data:image/png;base64,") >= 4
    assert any("antspyx is not installed" in n for n in summary["notes"])
    assert "antspyx is not installed" in capsys.readouterr().err


def test_bench_bad_inputs(two_subjects: Path, tmp_path: Path, capsys) -> None:
    assert _cli(["registration", "--data", str(two_subjects), "--out", str(tmp_path / "o"),
                 "--split", "all", "--moving-contrast", "angio"]) == 1
    assert "has both angio and b0" in capsys.readouterr().err
    assert _cli(["registration", "--data", str(two_subjects), "--out", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
    assert _cli(["registration", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")]) == 1
    assert "dataset directory not found" in capsys.readouterr().err


def test_apply_motion_moves_the_image_content() -> None:
    """A whole-voxel translation moves the data by exactly that many voxels."""
    import nibabel as nib

    data = np.zeros((20, 20, 20), np.float32)
    data[5:10, 6:9, 7:12] = 1.0
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    moved = apply_motion(img, rigid_matrix((0, 0, 0), (4.0, 0.0, -2.0))).get_fdata()
    np.testing.assert_allclose(moved[7:12, 6:9, 6:11], 1.0)
    assert moved.sum() == pytest.approx(data.sum())


def test_qc_reslicing_with_the_true_transform_undoes_the_motion() -> None:
    """The 'after' image of a QC page is the moving image through the found affine."""
    import nibabel as nib

    from mri2mri.benchmarks.registration.qc import resliced

    data = np.zeros((24, 24, 24), np.float32)
    data[6:14, 8:12, 9:16] = 1.0
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    motion = rigid_matrix((0, 0, 0), (4.0, -2.0, 6.0))
    moved = apply_motion(img, motion)
    after = resliced(img, moved, np.linalg.inv(motion))  # the truth, as in the protocols
    np.testing.assert_allclose(after.get_fdata(), moved.get_fdata(), atol=1e-5)
    assert not np.allclose(resliced(img, moved, np.eye(4)).get_fdata(), moved.get_fdata())


def test_brain_masks_option(demo_cohort: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--masks brain: the DIPY method gets both masks, the rows say so, the cache key differs."""
    from mri2mri.benchmarks.registration import methods as methods_mod

    subject = Cohort.discover(demo_cohort).subjects[4]
    model = str(channel_picker(tmp_path / "b0_to_T1w.onnx", ["b0"], "T1w", target_scale=1000.0))
    plain = BenchmarkConfig(data=str(demo_cohort), model=model, methods=[DIRECT, VIA])
    masked = BenchmarkConfig(data=str(demo_cohort), model=model, methods=[DIRECT, VIA],
                             masks="brain")
    assert plain.fingerprint() != masked.fingerprint()
    with pytest.raises(ValueError, match="unknown masks 'skull'"):
        BenchmarkConfig(data=str(demo_cohort), model=None, methods=[DIRECT], masks="skull")
    given: list[tuple[int, int]] = []
    register = methods_mod.register_images

    def spy(moving, static, *args, **kwargs):  # noqa: ANN001, ANN202
        given.append((int(kwargs["moving_mask"].sum()), int(kwargs["static_mask"].sum())))
        return register(moving, static, *args, **kwargs)

    monkeypatch.setattr(methods_mod, "register_images", spy)
    rows = runner_mod.run_subject(subject, masked)
    # Both methods, unmoved and moved pairs: every registration had both masks.
    assert len(given) == 4 and all(m > 0 and s > 0 for m, s in given)
    registered = [r for r in rows if r["method"] in (DIRECT, VIA)]
    assert {r["masks"] for r in registered} == {"brain"} and len(registered) == 4
    for row in registered:
        if row["protocol"] == KNOWN_TRUTH:
            assert row["translation_mae_mm"] < 0.5 and row["boundary_error_mm"] < 1.0
    assert _cli(["registration", "--data", str(demo_cohort), "--out", str(tmp_path / "o"),
                 "--masks", "skull"]) == 1
    assert "unknown masks 'skull'" in capsys.readouterr().err
