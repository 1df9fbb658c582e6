"""Per-subject variety of the simulator: random scanners, lesions, skull stripping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.data.simulate.demo_cohort import (
    DemoConfig,
    generate_cohort,
    load_template,
    simulate_subject,
)
from mri2mri.data.simulate.lesions import LESION_TISSUES, add_lesions, draw_lesions
from mri2mri.data.simulate.tissue import signal
from mri2mri.data.simulate.variety import PRESETS, SubjectVariety, Variety, random_scanner


def test_parse_presets_overrides_and_errors() -> None:
    assert Variety.parse("none") == Variety() and not Variety.parse("none").active
    assert Variety.parse("starter") == PRESETS["starter"]
    assert Variety.parse("starter,lesions=1,max_lesions=2") == Variety(
        scanners=0.85, lesions=1.0, max_lesions=2, skull_strip=0.6)
    for bad in ("nonsense", "lesions=2", "lesions=x", "colour=1", "max_lesions=0"):
        with pytest.raises(ValueError, match="variety"):
            Variety.parse(bad)


def test_without_variety_a_subject_draws_nothing_more() -> None:
    cfg = DemoConfig(subjects=1, resolution=6.0, contrasts=("T1w",))
    plain = simulate_subject(load_template(), cfg, 0)[0]["T1w"]
    same = simulate_subject(load_template(), DemoConfig(
        subjects=1, resolution=6.0, contrasts=("T1w",), variety=Variety()), 0)[0]["T1w"]
    assert np.array_equal(np.asarray(plain.dataobj), np.asarray(same.dataobj))


def test_random_scanners_differ_and_stay_valid() -> None:
    rng = np.random.default_rng(0)
    a, b = random_scanner(rng), random_scanner(rng)
    assert a != b and not a.empty
    assert 80 <= a.protocol["T2w"]["te"] <= 120 and a.snr["T1w"] > 0


def test_lesions_are_t2_bright_t1_dark_and_keep_the_volume() -> None:
    template = load_template()
    rng = np.random.default_rng(1)
    lesions = draw_lesions(rng, template.wm, template.affine, 1)
    centre = lesions[0].centre
    points = centre + np.random.default_rng(2).uniform(-30, 30, (4000, 3))
    inv = np.linalg.inv(template.affine)
    from scipy import ndimage

    idx = (points @ inv[:3, :3].T + inv[:3, 3]).T
    frac = {t: ndimage.map_coordinates(template.map(t), idx, order=1) for t in template.tissues}
    out = add_lesions(frac, points, lesions)
    total_before = sum(frac.values())
    total_after = sum(out[t] for t in (*template.tissues, *LESION_TISSUES))
    assert np.allclose(total_before, total_after, atol=1e-6)  # carved, not added
    assert out["tumour"].max() > 0.9 and out["oedema"].max() > 0.3
    # The solid tumour sits where its centre is; the compartments are T2w bright, T1w dark.
    from mri2mri.data.simulate.lesions import lesion_tissues
    from mri2mri.data.simulate.tissue import LITERATURE_1P5T

    tissues = {**LITERATURE_1P5T, **lesion_tissues(np.random.default_rng(3))}
    for name in LESION_TISSUES:
        assert signal("T2w", tissues[name]) > signal("T2w", tissues["wm"])
        assert signal("T1w", tissues[name]) < signal("T1w", tissues["wm"])


@pytest.fixture(scope="module")
def varied_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("varied") / "ds", subjects=3, seed=5,
                           resolution=4.0, jobs=1, contrasts=("T1w", "T2w"),
                           variety=Variety(scanners=1.0, lesions=1.0, skull_strip=1.0))


def test_varied_cohort_records_its_draws_and_is_stripped(varied_cohort: Path) -> None:
    params = json.loads((varied_cohort / "dataset_description.json").read_text())
    assert params["SimulationParameters"]["variety"]["lesions"] == 1.0
    for sub, p in params["SubjectParameters"].items():
        assert p["skull_stripped"] and p["lesions"] and "scanner" in p
        t1 = np.asarray(nib.load(str(varied_cohort / sub / "anat" / f"{sub}_T1w.nii.gz"))
                        .dataobj)
        t2 = np.asarray(nib.load(str(varied_cohort / sub / "anat" / f"{sub}_T2w.nii.gz"))
                        .dataobj)
        assert (t1 == 0).mean() > 0.3  # a zero background, as skull-stripped scans have
        assert np.array_equal(t1 == 0, t2 == 0)  # one mask for all contrasts of a subject


def test_variety_is_reproducible(varied_cohort: Path, tmp_path: Path) -> None:
    again = generate_cohort(tmp_path / "again", subjects=3, seed=5, resolution=4.0, jobs=2,
                            contrasts=("T1w", "T2w"),
                            variety=Variety(scanners=1.0, lesions=1.0, skull_strip=1.0))
    for path in sorted(varied_cohort.rglob("*.nii.gz")):
        assert path.read_bytes() == (again / path.relative_to(varied_cohort)).read_bytes()


def test_subject_variety_without_variety_is_the_default_scanner() -> None:
    from mri2mri.data.simulate.shift import AcquisitionShift

    drawn = SubjectVariety.draw(None, [0, 0, 3], load_template(), AcquisitionShift())
    assert drawn.scanner == AcquisitionShift() and drawn.params() == {}


def test_cli_takes_variety_and_rejects_a_bad_one(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mri2mri.data.cli", "demo", str(tmp_path / "bad"),
           "--subjects", "1", "--resolution", "6", "--variety", "lesions=3"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1 and "variety" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_a_stripped_head_loses_its_head_in_the_dwi_too() -> None:
    """With a head, a skull-stripped subject's DWI is stripped by the same mask (carried to
    the DWI's own grid by world coordinates): no scalp is left in the b=0 where the T1w has
    none. Unstripped, the b=0 has its head there. The DWI is undistorted here (the b=0
    starters' cohort), so the two grids agree up to the resampling."""
    from scipy import ndimage

    from mri2mri.data.simulate.head import HeadLayers
    from mri2mri.runtime.imaging.nifti import mean_b0
    from mri2mri.runtime.imaging.resample import resample_to

    found = {}
    for strip in (0.0, 1.0):
        cfg = DemoConfig(subjects=1, resolution=6.0, contrasts=("T1w", "dwi"),
                         head=HeadLayers(), epi_peak_displacement_mm=(0.0, 0.0),
                         variety=Variety(skull_strip=strip))
        images, params = simulate_subject(load_template(cfg.head), cfg, 0)
        assert params.get("skull_stripped", False) == bool(strip)
        t1, dwi = images["T1w"], images["dwi"]
        b0 = nib.Nifti1Image(mean_b0(np.asarray(dwi.dataobj, np.float32), cfg.bvalues,
                                     "dwi"), dwi.affine)
        on_t1 = np.asarray(resample_to(b0, t1).dataobj)
        # Within two T1w voxels of its mask the resamplings (mask to DWI, b=0 to T1w) blur.
        kept = ndimage.distance_transform_edt(np.asarray(t1.dataobj) == 0,
                                              sampling=t1.header.get_zooms()) <= 12.0
        covered = np.asarray(resample_to(nib.Nifti1Image(np.ones(b0.shape, np.float32),
                                                         dwi.affine), t1).dataobj) > 0.99
        found[strip] = on_t1[covered & ~kept], on_t1[covered & kept]
    outside, inside = found[1.0]
    assert outside.size > 100 and np.all(outside == 0) and inside.mean() > 0
    assert found[0.0][0].size == 0  # unstripped: the T1w's head fills the grid
