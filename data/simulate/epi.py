"""What a 1.5 T single-shot spin-echo EPI b=0 makes of a T2-weighted object (numpy/scipy only).

A b=0 image is a T2-weighted spin echo read out by one echo-planar train, so it
differs from a turbo-spin-echo T2w by the EPI read-out, not by contrast. This
module models that read-out, for the simulated phantom (`demo_cohort`, from its
tissue maps) and for any real T2w (`pseudo_b0`):

1. **Grid**: the IXI DTI grid, 1.75 x 1.75 x 2.35 mm, 128 x 128 x 56, axial,
   tilted about the left-right axis (IXI headers: 6.4° and 5.5°; default range
   4-9°), the slab centred on the brain and raised 8 mm so that the lowest
   cerebellum falls out of it, as in IXI (partial coverage).
2. **Off-resonance** (Hz): Gaussian hot spots (sigma 15 mm) over the
   orbitofrontal cortex above the frontal sinus (peak 35-70 Hz, i.e. 0.55-1.1
   ppm at 1.5 T) and over both temporal lobes above the mastoid air cells and
   ear canals (half that), plus a smooth residual-shim field of at most 5 Hz
   (correlation 40 mm). Tissue-air susceptibility difference ~9.4 ppm (Schenck
   JF, Med Phys 1996;23:815-850) puts brain tissue next to the sinuses about a
   ppm off resonance; the hot spots sit at the MNI152 positions used by the
   demo since its first version, and for a real image at the same relative
   place in its brain's bounding box.
3. **Distortion** along the phase-encoding (PE) axis only: an off-resonance of
   f Hz moves signal by f x TotalReadoutTime voxels (Jezzard P, Balaban RS, Magn
   Reson Med 1995;34:65-73). The object is sampled on a grid that is finer along
   PE and through the slab, each sample's signal is pushed to its displaced
   place (linear splatting) and the samples are summed into EPI voxels: total
   signal is conserved exactly, and where the field's gradient compresses the
   image the intensity piles up by the Jacobian 1 / (1 + d(shift)/dy), where it
   stretches it drops out.
4. **Resolution**: each EPI voxel integrates its box (in-plane 1.75 mm, slice
   profile 2.35 mm); in-plane only the central 76 % of k-space is acquired, with
   a cosine roll-off over its outer 20 %, and zero-filled to 128 (measured on
   the IXI b=0s: their power spectrum falls to the noise floor at 0.75-0.78 of
   k_max along both in-plane axes, from a roll-off that starts near 0.6, i.e.
   about 96 of 128 lines acquired). This also correlates the noise in-plane.
5. **Nyquist ghost**: odd/even echo inconsistency adds a copy of the image
   shifted by N/2 along PE, in quadrature, at `ghost_level` of its amplitude.
6. **Noise**: complex Gaussian, through the same k-space window, then the
   magnitude (Rician); sigma = median brain signal / `snr`.
7. **Fat** (when a fat map is given): spectral fat saturation removes the
   methylene/methyl peaks but not the olefinic (5.3 ppm) and glycerol (4.2 ppm)
   peaks next to water, about 9 % of the fat signal (Hamilton G et al., NMR
   Biomed 2011;24:784-790); that residual stays at the water frequency.

Measured on the two IXI b=0s in the project's shared data (see docs/data.md):
SNR (median brain b=0 / noise sigma) 25-32, default 27; PE axis A-P (the
eddy-current distortions between diffusion directions are three times larger
along A-P than L-R); no N/2 ghost above the background (<= 0.18 % and 0.26 %),
default 0.3 %. `tests/test_epi.py::measure_ixi_b0` repeats these measurements.
Not modelled: T2* blurring along PE, eddy currents, motion, Gibbs ringing
beyond what the k-space window gives, parallel-imaging noise amplification,
multi-coil (non-central chi) noise, the chemical-shift displacement of an
unsuppressed main fat peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from .fields import grid_points, random_field, rotation_matrix
from .tissue import FAT_RESIDUAL

#: The MNI152 2009 brain mask's bounding box (mm): where the hot spots are placed from.
MNI_BRAIN_BOX = (np.array([-72.0, -107.0, -72.0]), np.array([72.0, 73.0, 82.0]))
#: Susceptibility hot spots in MNI space (mm) and their weight relative to the frontal one:
#: orbitofrontal cortex above the frontal sinus; temporal lobes above the mastoids/ear canals.
MNI_HOTSPOTS = (((0.0, 35.0, -18.0), 1.0), ((-40.0, 8.0, -30.0), 0.5), ((40.0, 8.0, -30.0), 0.5))
AXES = "ijk"


@dataclass(frozen=True)
class EpiProtocol:
    """Every parameter of the simulated EPI b=0; the defaults are IXI's (see module docs)."""

    voxel_mm: tuple[float, float, float] = (1.75, 1.75, 2.35)
    matrix: tuple[int, int, int] = (128, 128, 56)
    #: BIDS PhaseEncodingDirection on the EPI grid (i, j, k with an optional "-").
    phase_encoding: str = "j"
    #: Seconds; displacement (voxels) = off-resonance (Hz) x this. 1.5 T single-shot EPI,
    #: 128 lines, parallel imaging factor 2: effective echo spacing 0.39 ms.
    total_readout_time: float = 0.05
    field_strength: float = 1.5
    frontal_peak_hz: tuple[float, float] = (35.0, 70.0)
    hotspot_sigma_mm: float = 15.0
    background_hz: float = 5.0
    background_correlation_mm: float = 40.0
    kspace_fraction: float = 0.76
    kspace_taper: float = 0.2
    snr: float = 27.0
    ghost_level: float = 0.003
    fat_residual: float = FAT_RESIDUAL
    tilt_deg: tuple[float, float] = (4.0, 9.0)
    slab_offset_mm: float = 8.0

    def __post_init__(self) -> None:
        axis = self.phase_encoding.rstrip("-")
        if axis not in ("i", "j") or self.phase_encoding.count("-") > 1:
            raise ValueError(f"phase_encoding {self.phase_encoding!r}: use i, i-, j or j- "
                             "(in-plane)")
        if self.total_readout_time < 0 or self.ghost_level < 0 or self.snr <= 0:
            raise ValueError("total_readout_time and ghost_level must be >= 0, snr > 0")
        if not 0 < self.kspace_fraction <= 1 or not 0 <= self.kspace_taper <= 1:
            raise ValueError("kspace_fraction must be in (0, 1], kspace_taper in [0, 1]")

    @property
    def pe_axis(self) -> int:
        return AXES.index(self.phase_encoding[0])

    @property
    def pe_sign(self) -> int:
        return -1 if self.phase_encoding.endswith("-") else 1

    def sidecar(self) -> dict:
        """The BIDS sidecar keys of this read-out (no read-out time where it is 0: nothing
        is displaced, and BIDS wants a positive one)."""
        n_pe = self.matrix[self.pe_axis]
        readout = {"TotalReadoutTime": self.total_readout_time,
                   "EffectiveEchoSpacing": round(self.total_readout_time / (n_pe - 1), 8)}
        return {"PhaseEncodingDirection": self.phase_encoding,
                **(readout if self.total_readout_time > 0 else {}),
                "ReconMatrixPE": n_pe,
                "AcquisitionMatrixPE": int(round(self.kspace_fraction * n_pe)),
                "SliceThickness": self.voxel_mm[2],
                "MagneticFieldStrength": self.field_strength}


@dataclass
class EpiImage:
    """A simulated EPI acquisition: magnitude volumes plus what made them."""

    image: nib.Nifti1Image  # 4D float32 magnitude, one volume per repeat
    field_hz: np.ndarray  # off-resonance on the EPI grid
    shift_voxels: np.ndarray  # displacement along PE on the EPI grid (signed, voxels)
    sigma: float  # noise sigma of each complex channel
    parameters: dict  # the drawn values (peak Hz, tilt) and the protocol


def epi_grid(centre: np.ndarray, protocol: EpiProtocol, tilt_deg: float = 0.0,
             scale: float = 1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axial LAS grid like IXI's, tilted about x, centred on `centre` (world mm).

    `scale` > 1 makes the voxels coarser over the same field of view (fast demos).
    """
    voxel = np.array(protocol.voxel_mm) * scale
    shape = tuple(int(round(n / scale)) for n in protocol.matrix)
    linear = rotation_matrix(np.array([np.deg2rad(tilt_deg), 0.0, 0.0])) @ np.diag(
        voxel * [-1, 1, 1])
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre, float) - linear @ ((np.array(shape) - 1) / 2)
    return shape, affine


def hotspots_for_box(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """The MNI hot spots moved to the same relative place in another brain's bounding box."""
    mlo, mhi = MNI_BRAIN_BOX
    return [(lo + (np.array(c) - mlo) / (mhi - mlo) * (hi - lo), w) for c, w in MNI_HOTSPOTS]


def off_resonance_hz(points: np.ndarray, hotspots: list[tuple[np.ndarray, float]], *,
                     peak_hz: float, protocol: EpiProtocol, rng: np.random.Generator,
                     box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Off-resonance (Hz) at world points (N, 3): hot spots plus a smooth residual-shim field."""
    field = np.zeros(len(points))
    for centre, weight in hotspots:
        d2 = ((points - np.asarray(centre)) ** 2).sum(1)
        field += weight * peak_hz * np.exp(-d2 / (2 * protocol.hotspot_sigma_mm ** 2))
    if protocol.background_hz > 0:
        shim = random_field(rng, box[0] - 30, box[1] + 30, spacing=10.0,
                            smoothness=protocol.background_correlation_mm,
                            amplitude=protocol.background_hz)
        field += shim(points)
    return field


def fine_grid(shape: tuple[int, ...], affine: np.ndarray, oversample: tuple[int, int, int]
              ) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid whose voxels subdivide each EPI voxel into `oversample` samples per axis."""
    os_ = np.array(oversample)
    fine = np.eye(4)
    fine[:3, :3] = affine[:3, :3] / os_
    # Sample k of voxel v sits at index v + (k + 0.5) / os - 0.5 of the EPI grid.
    fine[:3, 3] = affine[:3, :3] @ ((0.5 / os_) - 0.5) + affine[:3, 3]
    return tuple(int(n) for n in np.array(shape[:3]) * os_), fine


def displace(volume: np.ndarray, shift: np.ndarray, axis: int) -> np.ndarray:
    """Move each sample's signal `shift` samples along `axis` (linear splatting).

    What the EPI read-out does to an off-resonant spin: its signal lands elsewhere
    along PE. Summing into the target samples conserves the total signal exactly
    (except what leaves the field of view) and piles up or thins out intensity
    where neighbouring samples move by different amounts.
    """
    v = np.moveaxis(volume, axis, -1)
    s = np.moveaxis(shift, axis, -1)
    n = v.shape[-1]
    target = np.arange(n) + s
    lower = np.floor(target)
    w = target - lower
    lower = lower.astype(np.int64)
    line = np.arange(v.size // n).reshape(v.shape[:-1] + (1,)) * n
    out = np.zeros(v.size)
    for idx, weight in ((lower, 1.0 - w), (lower + 1, w)):
        ok = (idx >= 0) & (idx < n)
        out += np.bincount((line + idx)[ok], weights=(v * weight)[ok], minlength=v.size)
    return np.moveaxis(out.reshape(v.shape), -1, axis)


def block_mean(volume: np.ndarray, oversample: tuple[int, int, int]) -> np.ndarray:
    """Average each `oversample` block: the EPI voxel's integral over its box."""
    a, b, c = oversample
    x, y, z = (n // o for n, o in zip(volume.shape, oversample, strict=True))
    return volume.reshape(x, a, y, b, z, c).mean(axis=(1, 3, 5))


def kspace_window(n: int, fraction: float, taper: float) -> np.ndarray:
    """1D k-space weights (FFT order): acquired |k| <= fraction, cosine roll-off, zero-filled."""
    k = np.abs(np.fft.fftfreq(n)) * 2.0  # 0 at the centre, 1 at k_max
    start = fraction * (1.0 - taper)
    ramp = 0.5 * (1 + np.cos(np.pi * (k - start) / max(fraction - start, 1e-9)))
    return np.where(k <= start, 1.0, np.where(k <= fraction, ramp, 0.0))


def read_out(clean: np.ndarray, protocol: EpiProtocol, sigma: float,
             rng: np.random.Generator) -> np.ndarray:
    """Ghost, k-space window and complex noise on a clean EPI-grid volume; the magnitude.

    `sigma` is the noise of each complex channel in the final image (the window
    correlates the noise but keeps this per-voxel sigma).
    """
    pe = protocol.pe_axis
    signal = clean.astype(np.complex128)
    if protocol.ghost_level:
        signal = signal + 1j * protocol.ghost_level * np.roll(clean, clean.shape[pe] // 2,
                                                              axis=pe)
    w0 = kspace_window(clean.shape[0], protocol.kspace_fraction, protocol.kspace_taper)
    w1 = kspace_window(clean.shape[1], protocol.kspace_fraction, protocol.kspace_taper)
    window = np.outer(w0, w1)[:, :, None]
    white = sigma / np.sqrt(np.mean(window ** 2))
    noise = rng.normal(0.0, white, clean.shape) + 1j * rng.normal(0.0, white, clean.shape)
    acquired = np.fft.ifft2(np.fft.fft2(signal + noise, axes=(0, 1)) * window, axes=(0, 1))
    return np.abs(acquired)


def oversampling(epi_voxel: np.ndarray, object_voxel: float, pe_axis: int
                 ) -> tuple[int, int, int]:
    """Samples per EPI voxel: at least the object's resolution, at least 2 along PE and slice."""
    os_ = [max(1, int(np.ceil(v / object_voxel - 1e-6))) for v in epi_voxel]
    os_[pe_axis] = max(os_[pe_axis], 2)
    os_[2] = max(os_[2], 2)
    return os_[0], os_[1], os_[2]


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _world_box(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ijk = np.argwhere(mask)
    corners = np.array([ijk.min(0), ijk.max(0)], float)
    world = nib.affines.apply_affine(affine, np.array(
        [[corners[a, 0], corners[b, 1], corners[c, 2]] for a in (0, 1) for b in (0, 1)
         for c in (0, 1)]))
    return world.min(0), world.max(0)


def pseudo_b0(t2w: nib.Nifti1Image, rng: np.random.Generator | int = 0,
              protocol: EpiProtocol = EpiProtocol(), *, brain_mask: np.ndarray | None = None,
              fat_mask: np.ndarray | None = None, volumes: int = 1) -> EpiImage:
    """A pseudo-b=0 EPI series (`volumes` repeats, same distortion, own noise) from a T2w.

    The output lies on an EPI grid in the T2w's world space: resampled into the
    T2w's grid by its affine, an unmoved pair is aligned except for the EPI's own
    distortion. `brain_mask` (on the T2w grid; default: its foreground) places the
    hot spots and sets the SNR's reference signal; `fat_mask` (on the T2w grid)
    marks voxels whose signal is fat, suppressed to `protocol.fat_residual`.
    """
    from mri2mri.runtime.imaging.normalize import foreground_mask

    rng = np.random.default_rng(rng)
    data = np.asarray(t2w.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a 3D T2-weighted image is needed, not shape {data.shape}")
    brain = foreground_mask(data) if brain_mask is None else np.asarray(brain_mask, bool)
    if brain.sum() < 100:
        raise ValueError("the brain mask holds fewer than 100 voxels")
    if fat_mask is not None:
        data = np.where(fat_mask, data * protocol.fat_residual, data)
    lo, hi = _world_box(brain, t2w.affine)
    tilt = float(rng.uniform(*protocol.tilt_deg))
    peak_hz = float(rng.uniform(*protocol.frontal_peak_hz))
    centre = (lo + hi) / 2 + [0.0, 0.0, protocol.slab_offset_mm]
    shape, affine = epi_grid(centre, protocol, tilt)
    os_ = oversampling(np.array(protocol.voxel_mm), float(min(t2w.header.get_zooms()[:3])),
                       protocol.pe_axis)
    fshape, faffine = fine_grid(shape, affine, os_)
    points = grid_points(fshape, faffine)
    idx = nib.affines.apply_affine(np.linalg.inv(t2w.affine), points).T
    obj = ndimage.map_coordinates(data, idx, order=1, mode="constant", cval=0.0)
    inside = ndimage.map_coordinates(brain.astype(np.float32), idx, order=1, mode="constant")
    field = off_resonance_hz(points, hotspots_for_box(lo, hi), peak_hz=peak_hz,
                             protocol=protocol, rng=rng, box=(lo, hi))
    del points, idx
    shift = (protocol.pe_sign * field * protocol.total_readout_time
             * os_[protocol.pe_axis]).reshape(fshape)
    obj = block_mean(displace(obj.reshape(fshape), shift, protocol.pe_axis), os_)
    inside = block_mean(displace(inside.reshape(fshape), shift, protocol.pe_axis), os_)
    reference = float(np.median(obj[inside > 0.5])) if (inside > 0.5).any() else float(
        obj.max())
    sigma = reference / protocol.snr
    series = np.stack([read_out(obj, protocol, sigma, rng) for _ in range(volumes)], axis=3)
    field_epi = block_mean(field.reshape(fshape), os_)
    params = {"tilt_deg": round(tilt, 3), "frontal_peak_hz": round(peak_hz, 3),
              "oversampling": list(os_), "protocol": asdict(protocol)}
    return EpiImage(_image(series, affine), field_epi,
                    protocol.pe_sign * field_epi * protocol.total_readout_time, sigma, params)
