"""The EPI b=0 model: distortion along PE of the stated size, pile-up, noise, ghost, pseudo-DWI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mri2mri.data.cli import app
from mri2mri.data.cohort import Cohort
from mri2mri.data.simulate.epi import EpiProtocol, displace, kspace_window, pseudo_b0
from mri2mri.data.simulate.pseudo_dwi import make_pseudo_dwi
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.resample import resample_to

#: A small EPI (3 mm voxels, 40 x 40 x 24), no tilt, no noise, ghost or k-space window:
#: what is left to test is one effect at a time.
SMALL = EpiProtocol(voxel_mm=(3.0, 3.0, 3.0), matrix=(40, 40, 24), tilt_deg=(0.0, 0.0),
                    slab_offset_mm=0.0, snr=1e6, ghost_level=0.0, kspace_fraction=1.0,
                    kspace_taper=0.0, background_hz=0.0)
#: Hot spots so wide that the field is uniform over the object: 40 Hz x (1 + 0.5 + 0.5).
UNIFORM_HZ = 80.0
UNIFORM = replace(SMALL, frontal_peak_hz=(40.0, 40.0), hotspot_sigma_mm=1e5)


def _object(shape: tuple[int, int, int] = (48, 48, 36), voxel: float = 2.0,
            seed: int = 0) -> nib.Nifti1Image:
    """A textured ellipsoid (edges along every axis) on a 2 mm grid centred on the origin."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random(shape), 1.5)
    ijk = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    r2 = sum(((ijk[a] - centre[a]) / (0.33 * shape[a])) ** 2 for a in range(3))
    data = np.where(r2 < 1, 100.0 + 400.0 * (texture - texture.min()) / np.ptp(texture), 0.0)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -centre * voxel
    return nib.Nifti1Image(data.astype(np.float32), affine)


def _centroid(volume: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(volume))


@pytest.mark.parametrize("pe", ["j", "j-", "i"])
def test_distortion_is_along_pe_only_and_of_the_stated_size(pe: str):
    """Uniform off-resonance f moves the image by f x TotalReadoutTime voxels along PE only."""
    obj = _object()
    still = pseudo_b0(obj, 3, replace(UNIFORM, phase_encoding=pe, total_readout_time=0.0))
    moved = pseudo_b0(obj, 3, replace(UNIFORM, phase_encoding=pe))
    assert np.allclose(still.image.affine, moved.image.affine)  # same grid
    np.testing.assert_allclose(moved.field_hz, UNIFORM_HZ, rtol=1e-3)
    step = _centroid(moved.image.get_fdata()[..., 0]) - _centroid(still.image.get_fdata()[..., 0])
    expected = np.zeros(3)
    axis = "ijk".index(pe[0])
    expected[axis] = (-1 if pe.endswith("-") else 1) * UNIFORM_HZ * UNIFORM.total_readout_time
    assert abs(expected[axis]) == pytest.approx(4.0)
    np.testing.assert_allclose(step, expected, atol=0.1)
    # The sidecar states the read-out that explains the displacement.
    meta = replace(UNIFORM, phase_encoding=pe).sidecar()
    assert meta["PhaseEncodingDirection"] == pe and meta["TotalReadoutTime"] == 0.05
    assert meta["EffectiveEchoSpacing"] == pytest.approx(0.05 / 39)


def test_hot_spots_distort_more_in_front_and_stay_along_pe():
    """With the default field the frontal displacement is the largest, and along PE only."""
    obj = _object()
    protocol = replace(SMALL, frontal_peak_hz=(60.0, 60.0))
    still = pseudo_b0(obj, 1, replace(protocol, total_readout_time=0.0)).image.get_fdata()[..., 0]
    epi = pseudo_b0(obj, 1, protocol)
    moved = epi.image.get_fdata()[..., 0]
    shift = epi.shift_voxels
    np.testing.assert_allclose(shift, epi.field_hz * protocol.total_readout_time)
    assert 0.9 * 60.0 <= epi.field_hz.max() <= 2 * 60.0
    # Along the readout (i) and slice (k) axes every column keeps its signal profile sum.
    for other in ((1, 2), (0, 1)):  # profiles along i and along k
        tol = 1e-3 * still.sum(axis=other).max()
        np.testing.assert_allclose(moved.sum(axis=other), still.sum(axis=other), atol=tol)
    along_pe = still.sum(axis=(0, 2))
    assert np.abs(moved.sum(axis=(0, 2)) - along_pe).max() > 0.02 * along_pe.max()
    # The frontal hot spot is anterior (+y) of the brain's centre: shifts peak there.
    peak = np.unravel_index(np.argmax(shift), shift.shape)
    world = nib.affines.apply_affine(epi.image.affine, peak)
    assert world[1] > 10.0


def test_displacement_conserves_signal_and_piles_up_by_the_jacobian():
    n = 400
    u = np.arange(n, dtype=float)
    shift = 12.0 * np.exp(-((u - 200.0) / 40.0) ** 2)  # compresses after the bump's centre
    line = np.zeros((3, n))
    line[:, 100:300] = 1.0
    out = displace(line, np.broadcast_to(shift, line.shape), axis=1)
    assert out.sum() == pytest.approx(line.sum(), rel=1e-12)
    # Where sample u lands (y = u + s(u)) the intensity is 1 / (1 + s'(u)) (local mean over
    # 5 samples: linear splatting spreads each sample over two neighbours).
    slope = np.gradient(shift)
    for sample in (170, 200, 215, 230, 250):
        y = int(round(sample + shift[sample]))
        assert out[1, y - 2:y + 3].mean() == pytest.approx(1.0 / (1.0 + slope[sample]),
                                                           rel=0.03)
    assert out[1].max() > 1.2 and out[1, 130:280].min() < 0.85  # pile-up and drop-out


def test_noise_matches_the_stated_snr():
    obj = _object()
    protocol = replace(SMALL, snr=20.0, kspace_fraction=0.76, kspace_taper=0.2)
    epi = pseudo_b0(obj, 5, protocol, volumes=2, brain_mask=obj.get_fdata() > 0)
    data = epi.image.get_fdata()
    clean = pseudo_b0(obj, 5, replace(protocol, snr=1e9),
                      brain_mask=obj.get_fdata() > 0).image.get_fdata()[..., 0]
    inside = clean > 50
    assert np.median(clean[inside]) / epi.sigma == pytest.approx(20.0, rel=0.1)
    # Two repeats: same signal, own noise; their difference has std sigma * sqrt(2).
    noise = data[..., 0] - data[..., 1]
    assert noise[inside].std() / np.sqrt(2) == pytest.approx(epi.sigma, rel=0.1)
    # Background: Rayleigh, mean sigma * sqrt(pi / 2).
    far = ~ndimage.binary_dilation(clean > 0.002 * clean.max(), iterations=4)
    assert far.sum() > 5000
    assert data[..., 0][far].mean() / np.sqrt(np.pi / 2) == pytest.approx(epi.sigma, rel=0.1)
    # The k-space window correlates neighbouring voxels in-plane, not across slices.
    pairs_x = inside[1:] & inside[:-1]
    pairs_z = inside[..., 1:] & inside[..., :-1]
    lag_x = np.corrcoef(noise[1:][pairs_x], noise[:-1][pairs_x])[0, 1]
    lag_z = np.corrcoef(noise[..., 1:][pairs_z], noise[..., :-1][pairs_z])[0, 1]
    assert lag_x > 0.25 and abs(lag_z) < 0.1


def test_ghost_is_at_half_the_field_of_view_along_pe():
    level = 0.05
    obj = _object()
    epi = pseudo_b0(obj, 2, replace(SMALL, ghost_level=level, snr=1e4))
    data = epi.image.get_fdata()[..., 0]
    clean = pseudo_b0(obj, 2, replace(SMALL, snr=1e4)).image.get_fdata()[..., 0]
    parent = clean > 0.05 * clean.max()
    half = data.shape[1] // 2
    band = np.roll(parent, half, axis=1) & ~ndimage.binary_dilation(parent, iterations=2)
    assert band.sum() > 200
    ratio = data[band].sum() / np.roll(clean, half, axis=1)[band].sum()
    assert ratio == pytest.approx(level, rel=0.1)
    other = np.roll(parent, half, axis=0) & ~ndimage.binary_dilation(parent, iterations=2)
    assert data[other].mean() < 0.1 * data[band].mean()  # nothing along the readout axis


def test_kspace_window_keeps_the_stated_fraction():
    w = kspace_window(128, 0.76, 0.2)
    k = np.abs(np.fft.fftfreq(128)) * 2
    assert np.all(w[k <= 0.6] == 1.0) and np.all(w[k > 0.77] == 0.0)
    assert np.all(np.diff(w[:64]) <= 1e-12)


def test_fat_is_suppressed_to_the_residual():
    obj = _object()
    fat = np.zeros(obj.shape, bool)
    fat[:, :, :18] = True
    a = pseudo_b0(obj, 4, SMALL, fat_mask=fat).image.get_fdata()[..., 0]
    b = pseudo_b0(obj, 4, SMALL).image.get_fdata()[..., 0]
    lower = slice(None), slice(None), slice(2, 10)
    assert a[lower].sum() == pytest.approx(SMALL.fat_residual * b[lower].sum(), rel=0.02)


def test_bad_protocols_are_rejected():
    for bad in ({"phase_encoding": "k"}, {"snr": 0.0}, {"kspace_fraction": 0.0}):
        with pytest.raises(ValueError):
            EpiProtocol(**bad)


def _two_subjects(cohort: Path, dest: Path) -> Path:
    for sub in ("sub-001", "sub-002"):
        (dest / sub / "anat").mkdir(parents=True)
        for c in ("T1w", "T2w"):
            name = f"{sub}_{c}.nii.gz"
            shutil.copyfile(cohort / sub / "anat" / name, dest / sub / "anat" / name)
    return dest


def test_pseudo_dwi_cohort_is_aligned_valid_and_deterministic(demo_cohort: Path,
                                                              tmp_path: Path):
    source = _two_subjects(demo_cohort, tmp_path / "real")
    out = make_pseudo_dwi(source, tmp_path / "pseudo", seed=1, jobs=1)
    cohort = Cohort.discover(out)
    assert [s.id for s in cohort.subjects] == ["sub-001", "sub-002"]
    for sub in cohort.subjects:
        assert sub.contrasts == ["T1w", "b0"]
        t1 = sub.path("T1w")
        assert t1.read_bytes() == (source / sub.id / "anat" / t1.name).read_bytes()
        assert np.loadtxt(sub.bvals).tolist() == [0.0, 0.0]
        meta = json.loads((out / sub.id / "dwi" / f"{sub.id}_dwi.json").read_text())
        assert meta["PhaseEncodingDirection"] == "j" and meta["TotalReadoutTime"] > 0
        t2 = nib.load(str(source / sub.id / "anat" / f"{sub.id}_T2w.nii.gz"))
        b0 = resample_to(sub.load("b0"), t2).get_fdata()
        ref = t2.get_fdata()
        covered = (b0 > 0) & (ref > np.percentile(ref, 60))
        aligned = np.corrcoef(b0[covered], ref[covered])[0, 1]
        shifted = np.corrcoef(np.roll(b0, 3, axis=0)[covered], ref[covered])[0, 1]
        assert aligned > 0.6 and aligned > shifted + 0.1
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["SimulationParameters"]["epi"]["snr"] == EpiProtocol().snr
    from bids_validation import bids_errors

    assert bids_errors(out) == []
    again = make_pseudo_dwi(source, tmp_path / "again", seed=1, jobs=2)
    dwi = "sub-002/dwi/sub-002_dwi.nii.gz"
    assert (again / dwi).read_bytes() == (out / dwi).read_bytes()


def test_pseudo_dwi_without_distortion_is_the_same_b0_undistorted(demo_cohort: Path,
                                                                  tmp_path: Path):
    """`--no-distortion`: a TotalReadoutTime of 0, every draw the same (grid, noise), so the
    b=0 is the distorted one's object put back in place; its sidecar has no read-out time,
    and the cohort stays valid BIDS."""
    source = _two_subjects(demo_cohort, tmp_path / "real")
    bent = make_pseudo_dwi(source, tmp_path / "bent", seed=1)
    out = tmp_path / "straight"
    done = CliRunner().invoke(app, ["pseudo-dwi", str(source), str(out), "--seed", "1",
                                    "--no-distortion"])
    assert done.exit_code == 0, done.output
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["SimulationParameters"]["epi"]["total_readout_time"] == 0.0
    assert "--no-distortion" in (out / "README.md").read_text()
    for sub in Cohort.discover(out).subjects:
        meta = json.loads((out / sub.id / "dwi" / f"{sub.id}_dwi.json").read_text())
        assert "TotalReadoutTime" not in meta and meta["PhaseEncodingDirection"] == "j"
        straight, distorted = sub.load("b0"), Cohort.discover(bent).subject(sub.id).load("b0")
        assert np.allclose(straight.affine, distorted.affine)  # the same grid
        t2 = nib.load(str(source / sub.id / "anat" / f"{sub.id}_T2w.nii.gz"))
        ref = t2.get_fdata()
        corr = {}
        for name, image in (("straight", straight), ("distorted", distorted)):
            b0 = resample_to(image, t2).get_fdata()
            covered = (b0 > 0) & (ref > np.percentile(ref, 60))
            corr[name] = np.corrcoef(b0[covered], ref[covered])[0, 1]
        assert corr["straight"] > corr["distorted"]
    from bids_validation import bids_errors

    assert bids_errors(out) == []


def test_pseudo_dwi_refuses_bad_input(demo_cohort: Path, tmp_path: Path):
    only_t1 = tmp_path / "only-t1"
    (only_t1 / "sub-001" / "anat").mkdir(parents=True)
    shutil.copyfile(demo_cohort / "sub-001" / "anat" / "sub-001_T1w.nii.gz",
                    only_t1 / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    for source, message in ((only_t1, "T1w and a T2w"), (tmp_path / "nowhere", "not a folder")):
        done = CliRunner().invoke(app, ["pseudo-dwi", str(source), str(tmp_path / "out")])
        assert done.exit_code != 0 and isinstance(done.exception, InputError)
        assert message in str(done.exception)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial"))


IXI_SUBJECTS = ("IXI002-Guys-0828", "IXI025-Guys-0852")


def measure_ixi_b0(folder: Path, subject: str) -> dict[str, float]:
    """The IXI b=0 numbers that set the EPI defaults (docs/data.md): SNR, k-space, ghost.

    Noise: the IXI background is zero outside the head (the SENSE reconstruction masks
    it), so sigma comes from the head: the residuals of a log-linear tensor fit of
    b=0 + 15 directions (volume 16 is the scanner's derived image, see docs/ixi.md),
    and from the difference of those residuals between neighbouring slices (which
    drops what is smooth across slices: model error, not noise).
    """
    vols = np.stack([nib.load(str(folder / f"{subject}-DTI-{k:02d}.nii.gz")).get_fdata()
                     for k in range(16)], axis=3)
    bvals = np.loadtxt(folder / "bvals.txt")
    bvecs = np.loadtxt(folder / "bvecs.txt")
    b0 = vols[..., 0]
    head = ndimage.binary_fill_holes(ndimage.binary_closing(
        b0 > 0.1 * np.percentile(b0[b0 > 0], 90), iterations=2))
    brain = ndimage.binary_opening(b0 > 0.3 * np.percentile(b0[head], 90), iterations=2)
    labels, _ = ndimage.label(brain)
    brain = ndimage.binary_fill_holes(labels == np.bincount(labels.ravel())[1:].argmax() + 1)
    inner = ndimage.binary_erosion(head, iterations=8) & np.all(vols > 0, axis=3)
    g = bvecs.T
    design = np.column_stack([np.ones(16), *(-bvals * g[:, i] * g[:, j] * (1 if i == j else 2)
                                              for i, j in ((0, 0), (1, 1), (2, 2), (0, 1),
                                                           (0, 2), (1, 2)))])
    log_s = np.log(vols[inner])
    fitted = np.exp(log_s @ np.linalg.pinv(design).T @ design.T)
    residual = np.zeros(vols.shape)
    residual[inner] = vols[inner] - fitted
    sigma_fit = float(np.median(np.sqrt((residual[inner] ** 2).sum(1) / (16 - 7))))
    pairs = inner[..., 1:] & inner[..., :-1]
    dz = (residual[..., 1:, 1:] - residual[..., :-1, 1:])[pairs]
    sigma_dz = float(dz.std() / np.sqrt(2))
    signal = float(np.median(b0[brain]))
    power = np.abs(np.fft.fft2(b0[:, :, 15:45], axes=(0, 1))) ** 2
    extent = []
    for axis in (0, 1):
        profile = np.log10(power.mean(axis=2).take(range(-3, 4), axis=1 - axis).mean(1 - axis))
        half = profile[: b0.shape[axis] // 2]
        floor = float(np.median(half[int(0.45 * b0.shape[axis]):]))
        extent.append(float(np.argmax(half < floor + 0.5)) / (b0.shape[axis] // 2))
    near = ndimage.binary_dilation(head, iterations=4)
    band = np.roll(head, b0.shape[1] // 2, axis=1) & ~near
    source = np.roll(band, b0.shape[1] // 2, axis=1)
    return {"sigma_fit": sigma_fit, "sigma_dz": sigma_dz, "brain_median": signal,
            "snr_low": signal / max(sigma_fit, sigma_dz),
            "snr_high": signal / min(sigma_fit, sigma_dz),
            "kspace_extent_i": extent[0], "kspace_extent_j": extent[1],
            "ghost_upper_bound": float(b0[band].mean() / b0[source].mean())}


@pytest.mark.parametrize("subject", IXI_SUBJECTS)
def test_defaults_match_the_ixi_b0_measurements(shared_dir: Path, subject: str):
    folder = shared_dir / "ixi-dti"
    if not (folder / f"{subject}-DTI-00.nii.gz").exists():
        pytest.skip(f"{folder} has no {subject} DTI")
    m = measure_ixi_b0(folder, subject)
    print(subject, {k: round(v, 4) for k, v in m.items()})
    default = EpiProtocol()
    assert m["snr_low"] - 2 <= default.snr <= m["snr_high"]
    for axis in ("i", "j"):
        assert m[f"kspace_extent_{axis}"] == pytest.approx(default.kspace_fraction, abs=0.04)
    assert m["ghost_upper_bound"] <= default.ghost_level
    img = nib.load(str(folder / f"{subject}-DTI-00.nii.gz"))
    assert img.shape == default.matrix
    np.testing.assert_allclose(img.header.get_zooms()[:3], default.voxel_mm, atol=0.01)
