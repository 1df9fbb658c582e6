"""The offline demo cohort: a simulated, physically grounded multi-contrast brain MRI dataset.

Anatomy comes from the real MNI152 2009c template's grey- and white-matter
probability maps that nilearn ships (CSF = brain mask minus GM minus WM).
Each subject gets a random smooth nonlinear deformation plus a small global
affine of that anatomy and its own tissue parameters (literature 1.5 T values
±10 %, see `mri2mri.data.simulate.tissue`). Images are computed with the signal
equations of the IXI protocols, each with its own smooth multiplicative bias
field and Rician noise, and written as a BIDS dataset.

Noise: Rician, with sigma set so that the mean white-matter signal over sigma
equals the SNR (defaults: T1w 30, T2w 20, PDw 30, DWI b=0 15, typical of 1.5 T
clinical scans and EPI). Bias fields: exp of a smooth random field with peak
±15 % (correlation length 60 mm). Anatomy: affine rotations up to ±5°,
translations up to ±5 mm, scaling ±6 %; nonlinear displacement up to 4 mm
(correlation length 15 mm). DWI: IXI-like grid (1.75 × 1.75 × 2.35 mm,
128 × 128 × 56, oblique by 4-9° about x), susceptibility displacement along
the phase-encode (A-P) axis peaking at 3-6 mm over the orbitofrontal cortex
and about half that over the temporal poles, with the matching intensity
pile-up (Jacobian), 2 b=0 and 6 b=1000 s/mm² volumes (isotropic diffusion); without
`dwi_distortion` no displacement (an undistorted spin-echo DWI). A skull-stripped subject
(`variety`) has its DWI stripped with the same mask, carried to the DWI grid.

Options: `head` (``--head``) lays CSF, skull, scalp muscle, fat and skin around
the brain (`mri2mri.data.simulate.head`, tissues in `mri2mri.data.simulate.tissue`);
`epi` (``--epi``) reads the DWI out with a single-shot spin-echo EPI model
(`mri2mri.data.simulate.epi`: off-resonance in Hz x readout time, k-space window,
Nyquist ghost, Rician noise at a measured SNR) instead of the plain model above.
Both draw from their own random streams; without them the files are the same as
before they existed.

Honest limits: no vessels, so no MRA/angio contrast; no skull, scalp or eyes
without `head` (the template is brain-extracted), so background is pure noise;
no face, eyes or neck with it; diffusion is isotropic (mean diffusivity only);
no motion; ghosting and k-space truncation only with `epi`; the T1w inversion
prepulse is an assumption (see `mri2mri.data.simulate.tissue`).
All images of a subject share one world space: the anatomical contrasts are
on one grid, the DWI on its own, and their affines place them correctly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.bids.names import dataset_description, generated_by, write_dataset_files
from mri2mri.runtime.core.atomic import atomic_dir, write_json
from mri2mri.runtime.core.errors import InputError, require_module
from mri2mri.runtime.core.parallel import map_jobs

from .demo_readme import PREVIEW_FILE, readme
from .epi import (
    MNI_HOTSPOTS,
    EpiProtocol,
    block_mean,
    displace,
    epi_grid,
    fine_grid,
    off_resonance_hz,
    oversampling,
    read_out,
)
from .fields import grid_points, random_field, rotation_matrix
from .head import HeadLayers, head_fractions
from .shift import AcquisitionShift
from .tissue import (
    FAT_RESIDUAL,
    HEAD_1P5T,
    HEAD_TISSUES,
    LITERATURE_1P5T,
    TISSUES,
    Tissue,
    signal,
    subject_tissues,
)
from .variety import SubjectVariety, Variety, strip_image

ANAT_CONTRASTS = ("T1w", "T2w", "PDw")
DWI_VOXEL_MM = (1.75, 1.75, 2.35)
DWI_MATRIX = (128, 128, 56)
#: Unit-norm diffusion directions of the 6 DW volumes (the DTI minimum).
BVECS_6 = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, 1, -1], [1, 1, 0], [-1, 1, 0]],
                   dtype=float) / np.sqrt(2)


@dataclass(frozen=True)
class DemoConfig:
    """Every parameter of the simulation; written to dataset_description.json."""

    subjects: int = 12
    seed: int = 0
    resolution: float = 2.0
    snr: dict[str, float] = field(default_factory=lambda: {"T1w": 30.0, "T2w": 20.0,
                                                           "PDw": 30.0, "dwi": 15.0})
    tissue_variation: float = 0.10
    bias_peak: float = 0.15
    bias_correlation_mm: float = 60.0
    max_rotation_deg: float = 5.0
    max_translation_mm: float = 5.0
    max_scaling: float = 0.06
    deformation_mm: float = 4.0
    deformation_correlation_mm: float = 15.0
    epi_peak_displacement_mm: tuple[float, float] = (3.0, 6.0)
    dwi_tilt_deg: tuple[float, float] = (4.0, 9.0)
    bvalues: tuple[float, ...] = (0.0, 0.0) + (1000.0,) * 6
    #: A simulated other scanner (see `mri2mri.data.simulate.shift`); None: the IXI protocols.
    shift: AcquisitionShift | None = None
    #: A head around the brain (see `mri2mri.data.simulate.head`); None: brain only.
    head: HeadLayers | None = None
    #: The EPI read-out of the DWI (see `mri2mri.data.simulate.epi`); None: the plain model.
    epi: EpiProtocol | None = None
    #: Per-subject random scanners, lesions and skull stripping (`variety`); None: none.
    variety: Variety | None = None
    #: Only these images (of T1w, T2w, PDw, dwi); None: all. Fewer is faster (the
    #: simulated prior of `mri2mri.train.prior` makes only what its task needs); the
    #: images made draw other random numbers than in a full cohort.
    contrasts: tuple[str, ...] | None = None

    def makes(self, image: str) -> bool:
        return self.contrasts is None or image in self.contrasts

    def scanner(self) -> AcquisitionShift:
        return self.shift if self.shift is not None else AcquisitionShift()


def _tissue_signals(contrast: str, tissues: dict[str, Tissue], shift: AcquisitionShift, *,
                    bvalue: float = 0.0, fat_residual: float = FAT_RESIDUAL
                    ) -> dict[str, float]:
    """Pure-tissue signals of one acquisition, with the shift's protocol and GM/WM contrast."""
    protocol = shift.protocol_for(contrast)
    out = {t: signal(contrast, tissues[t], bvalue, protocol) for t in tissues}
    k = shift.gm_wm_contrast.get(contrast)
    if k is not None and out["wm"] > 0:
        out["gm"] = out["wm"] * (out["gm"] / out["wm"]) ** k
    if contrast == "dwi" and "fat" in out:
        out["fat"] *= fat_residual  # spectral fat saturation (see tissue.FAT_RESIDUAL)
    return out


def _blur(volume: np.ndarray, affine: np.ndarray, fwhm_mm: float | None) -> np.ndarray:
    if not fwhm_mm:
        return volume
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    return ndimage.gaussian_filter(volume, fwhm_mm / 2.3548 / voxel, mode="nearest")


@dataclass
class Template:
    """MNI152 2009 tissue probability maps (1 mm) and the world box of the brain.

    With a head (`load(head=...)`), `csf` also holds the subarachnoid shell and
    `extra` the bone, muscle and fat fractions around the brain.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def tissues(self) -> tuple[str, ...]:
        return TISSUES + tuple(t for t in HEAD_TISSUES if t in self.extra)

    def map(self, tissue: str) -> np.ndarray:
        return self.extra[tissue] if tissue in self.extra else getattr(self, tissue)

    @classmethod
    def load(cls, head: HeadLayers | None = None) -> Template:
        from nilearn import datasets

        def arr(img: nib.Nifti1Image) -> np.ndarray:
            data = np.asarray(img.dataobj, dtype=np.float32)
            return data / max(float(data.max()), 1e-6)

        gm_img = datasets.load_mni152_gm_template(resolution=1)
        gm, wm = arr(gm_img), arr(datasets.load_mni152_wm_template(resolution=1))
        mask = arr(datasets.load_mni152_brain_mask(resolution=1)) > 0.5
        csf = np.clip(mask.astype(np.float32) - gm - wm, 0.0, 1.0)
        ijk = np.argwhere(mask)
        lo = gm_img.affine[:3, :3] @ ijk.min(0) + gm_img.affine[:3, 3]
        hi = gm_img.affine[:3, :3] @ ijk.max(0) + gm_img.affine[:3, 3]
        extra: dict[str, np.ndarray] = {}
        if head is not None:
            voxel = float(nib.affines.voxel_sizes(gm_img.affine)[0])
            extra = head_fractions(mask, voxel, head)
            csf = np.clip(csf + extra.pop("csf") * (1.0 - gm - wm), 0.0, 1.0)
        return cls(gm, wm, csf, gm_img.affine, np.minimum(lo, hi), np.maximum(lo, hi), extra)


class _Anatomy:
    """One subject's anatomy: subject world -> template world mapping and tissue sampling."""

    def __init__(self, template: Template, cfg: DemoConfig, rng: np.random.Generator) -> None:
        self.template = template
        angles = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, 3))
        scale = 1.0 + rng.uniform(-cfg.max_scaling, cfg.max_scaling, 3)
        self.linear = rotation_matrix(angles) @ np.diag(scale)
        self.centre = (template.box_lo + template.box_hi) / 2
        self.shift = rng.uniform(-cfg.max_translation_mm, cfg.max_translation_mm, 3)
        lo, hi = template.box_lo - 30, template.box_hi + 30
        self.displacement = [random_field(rng, lo, hi, spacing=5.0,
                                          smoothness=cfg.deformation_correlation_mm,
                                          amplitude=cfg.deformation_mm) for _ in range(3)]
        self.params = {"rotation_deg": np.rad2deg(angles).round(3).tolist(),
                       "scaling": scale.round(4).tolist(),
                       "translation_mm": self.shift.round(3).tolist()}

    def warp(self, points: np.ndarray) -> np.ndarray:
        """Template-world positions (N, 3) of subject-world points (N, 3)."""
        disp = np.stack([f(points) for f in self.displacement], axis=1)
        return (points + disp - self.centre) @ self.linear.T + self.centre + self.shift

    def fractions(self, points: np.ndarray, warped: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
        """Tissue fractions (GM/WM/CSF, and the head's) at subject-world points (N, 3);
        `warped`: their template-world positions, when already known."""
        warped = self.warp(points) if warped is None else warped
        inv = np.linalg.inv(self.template.affine)
        idx = (warped @ inv[:3, :3].T + inv[:3, 3]).T
        t = self.template
        return {name: ndimage.map_coordinates(t.map(name), idx, order=1, mode="constant",
                                              cval=0.0) for name in t.tissues}


def _anat_grid(template: Template, resolution: float, head_mm: float = 0.0
               ) -> tuple[tuple[int, int, int], np.ndarray]:
    """The anatomical grid: the brain's box plus 12 mm, plus the head's shells if any."""
    lo, hi = template.box_lo - 12 - head_mm, template.box_hi + 12 + head_mm
    shape = tuple(int(n) for n in np.ceil((hi - lo) / resolution).astype(int) + 1)
    affine = np.diag([resolution] * 3 + [1.0])
    affine[:3, 3] = lo
    return shape, affine


def _dwi_grid(template: Template, resolution: float, rng: np.random.Generator,
              cfg: DemoConfig) -> tuple[tuple[int, int, int], np.ndarray]:
    """IXI-like oblique LAS grid; coarser voxels (same field of view) for resolution > 2 mm."""
    factor = max(1.0, resolution / 2.0)
    voxel = np.array(DWI_VOXEL_MM) * factor
    shape = tuple(int(round(n / factor)) for n in DWI_MATRIX)
    tilt = np.deg2rad(rng.uniform(*cfg.dwi_tilt_deg))
    linear = rotation_matrix(np.array([tilt, 0.0, 0.0])) @ np.diag(voxel * [-1, 1, 1])
    centre = (template.box_lo + template.box_hi) / 2 + rng.uniform(-5, 5, 3) + [0, 0, 8]
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ ((np.array(shape) - 1) / 2)
    return shape, affine


def _rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = clean + rng.normal(0.0, sigma, clean.shape)
    imag = rng.normal(0.0, sigma, clean.shape)
    return np.sqrt(real * real + imag * imag)


def _bias(rng: np.random.Generator, points: np.ndarray, template: Template,
          cfg: DemoConfig, *, contrast: str, scanner: AcquisitionShift) -> np.ndarray:
    peak = scanner.bias_peak.get(contrast, cfg.bias_peak)
    field_ = random_field(rng, template.box_lo - 30, template.box_hi + 30, spacing=10.0,
                          smoothness=cfg.bias_correlation_mm, amplitude=peak)
    return np.exp(field_(points))


def _to_int16_image(data: np.ndarray, affine: np.ndarray, max_value: float) -> nib.Nifti1Image:
    """Store like a scanner: int16 magnitude, brightest tissue around `max_value`."""
    scaled = np.clip(np.round(data * max_value), 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(scaled, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def subject_anatomy(template: Template, cfg: DemoConfig, index: int
                    ) -> tuple[np.random.Generator, dict[str, Tissue], _Anatomy]:
    """Subject `index`'s random stream (after its anatomy draws), tissues and anatomy."""
    rng = np.random.default_rng([cfg.seed, index])
    tissues = subject_tissues(rng, cfg.tissue_variation)
    if cfg.head is not None:  # own stream: the brain-only draws stay as they were
        tissues.update(subject_tissues(np.random.default_rng([cfg.seed, index, 1]),
                                       cfg.tissue_variation, HEAD_1P5T))
    return rng, tissues, _Anatomy(template, cfg, rng)


def simulate_subject(template: Template, cfg: DemoConfig, index: int
                     ) -> tuple[dict[str, nib.Nifti1Image], dict]:
    """All images of subject `index` (0-based) plus the parameters that made them."""
    rng, tissues, anatomy = subject_anatomy(template, cfg, index)
    images: dict[str, nib.Nifti1Image] = {}
    variety = SubjectVariety.draw(cfg.variety, [cfg.seed, index, 3], template, cfg.scanner())
    tissues, anatomy = variety.tissues(tissues), variety.anatomy(anatomy)

    shape, affine = _anat_grid(template, cfg.resolution,
                               cfg.head.thickness_mm if cfg.head is not None else 0.0)
    points = grid_points(shape, affine)
    frac = anatomy.fractions(points)
    wm_voxels = frac["wm"] > 0.9
    scanner = variety.scanner
    strip = variety.strip_mask(frac, shape, cfg.resolution)
    for contrast in ANAT_CONTRASTS:
        if not cfg.makes(contrast):
            continue
        values = _tissue_signals(contrast, tissues, scanner)
        clean = sum(frac[t] * values[t] for t in frac)
        clean = _blur(clean.reshape(shape), affine,
                      scanner.blur_fwhm_mm.get(contrast)).ravel()
        clean = clean * _bias(rng, points, template, cfg, contrast=contrast, scanner=scanner)
        sigma = float(clean[wm_voxels].mean()) / scanner.snr.get(contrast, cfg.snr[contrast])
        noisy = _rician(clean, sigma, rng).reshape(shape)
        if strip is not None:
            noisy = noisy * strip
        peak = max(_tissue_signals(contrast, LITERATURE_1P5T, scanner).values())
        images[contrast] = _to_int16_image(noisy / peak, affine, 1000.0)

    params = {"tissues": {k: asdict(v) for k, v in tissues.items()}, **anatomy.params,
              **variety.params()}
    if not cfg.makes("dwi"):
        return images, params
    if cfg.epi is not None:
        images["dwi"], params["epi"] = _epi_dwi(template, cfg, index, anatomy=anatomy,
                                                tissues=tissues, rng=rng, scanner=scanner)
        images["dwi"] = strip_image(images["dwi"], strip, affine)
        return images, params

    dshape, daffine = _dwi_grid(template, cfg.resolution, rng, cfg)
    dpoints = grid_points(dshape, daffine)
    pe_dir = daffine[:3, 1] / np.linalg.norm(daffine[:3, 1])
    peak_mm = rng.uniform(*cfg.epi_peak_displacement_mm)
    # Susceptibility hot spots (subject world, mm): orbitofrontal cortex, temporal poles.
    spots = [((0.0, 35.0, -18.0), 1.0), ((-40.0, 8.0, -30.0), 0.5), ((40.0, 8.0, -30.0), 0.5)]
    shift = np.zeros(len(dpoints))
    for centre, weight in spots:
        d2 = ((dpoints - np.array(centre)) ** 2).sum(1)
        shift += weight * peak_mm * np.exp(-d2 / (2 * 15.0**2))
    dfrac = anatomy.fractions(dpoints + shift[:, None] * pe_dir)
    jac = 1.0 + np.gradient(shift.reshape(dshape), axis=1) / nib.affines.voxel_sizes(daffine)[1]
    jac = np.clip(jac, 0.2, None).ravel()
    bias = _bias(rng, dpoints, template, cfg, contrast="dwi", scanner=scanner)
    blur = scanner.blur_fwhm_mm.get("dwi")

    def dwi_clean(b: float) -> np.ndarray:
        values = _tissue_signals("dwi", tissues, scanner, bvalue=b)
        clean = sum(dfrac[t] * values[t] for t in dfrac) * jac
        return _blur(clean.reshape(dshape), daffine, blur).ravel() * bias

    b0_clean = dwi_clean(0.0)
    sigma = float(b0_clean[dfrac["wm"] > 0.9].mean()) / scanner.snr.get("dwi", cfg.snr["dwi"])
    volumes = []
    for b in cfg.bvalues:
        volumes.append(_rician(dwi_clean(b), sigma, rng).reshape(dshape))
    peak = max(_tissue_signals("dwi", LITERATURE_1P5T, scanner).values())
    images["dwi"] = strip_image(_to_int16_image(np.stack(volumes, axis=3) / peak, daffine,
                                                1000.0), strip, affine)

    params["epi_peak_displacement_mm"] = round(float(peak_mm), 3)
    return images, params


def _epi_protocol(cfg: DemoConfig) -> EpiProtocol:
    """The EPI protocol on this cohort's DWI grid: coarser voxels (same field of view and
    echo spacing, so the same displacement in mm) for resolution > 2 mm."""
    protocol = cfg.epi if cfg.epi is not None else EpiProtocol()
    factor = max(1.0, cfg.resolution / 2.0)
    if factor == 1.0:
        return protocol
    return replace(protocol, voxel_mm=tuple(v * factor for v in protocol.voxel_mm),
                   matrix=tuple(int(round(n / factor)) for n in protocol.matrix),
                   total_readout_time=protocol.total_readout_time / factor)


def _epi_dwi(template: Template, cfg: DemoConfig, index: int, *, anatomy: _Anatomy,
             tissues: dict[str, Tissue], rng: np.random.Generator,
             scanner: AcquisitionShift) -> tuple[nib.Nifti1Image, dict]:
    """The DWI read out by a single-shot spin-echo EPI (`mri2mri.data.simulate.epi`).

    Tissue fractions are sampled on a grid finer along PE and through the slab,
    each map is displaced along PE by off-resonance x readout time and summed into
    EPI voxels; every b-value's image is then the maps' signal-weighted sum, with
    bias, Nyquist ghost, k-space window and Rician noise.
    """
    protocol = _epi_protocol(cfg)
    erng = np.random.default_rng([cfg.seed, index, 2])
    tilt = float(erng.uniform(*protocol.tilt_deg))
    centre = ((template.box_lo + template.box_hi) / 2 + erng.uniform(-5, 5, 3)
              + [0.0, 0.0, protocol.slab_offset_mm])
    dshape, daffine = epi_grid(centre, protocol, tilt)
    voxel = np.array(protocol.voxel_mm)
    os_ = oversampling(voxel, max(cfg.resolution, 1.0), protocol.pe_axis)
    fshape, faffine = fine_grid(dshape, daffine, os_)
    fpoints = grid_points(fshape, faffine)
    peak_hz = float(erng.uniform(*protocol.frontal_peak_hz))
    hz = off_resonance_hz(fpoints, list(MNI_HOTSPOTS), peak_hz=peak_hz, protocol=protocol,
                          rng=erng, box=(template.box_lo, template.box_hi))
    shift = (protocol.pe_sign * hz * protocol.total_readout_time
             * os_[protocol.pe_axis]).reshape(fshape)
    fine = anatomy.fractions(fpoints)
    del fpoints
    dfrac = {t: block_mean(displace(fine.pop(t).reshape(fshape), shift, protocol.pe_axis), os_)
             for t in list(fine)}
    bias = _bias(rng, grid_points(dshape, daffine), template, cfg, contrast="dwi",
                 scanner=scanner).reshape(dshape)
    blur = scanner.blur_fwhm_mm.get("dwi")

    def clean(b: float) -> np.ndarray:
        values = _tissue_signals("dwi", tissues, scanner, bvalue=b,
                                 fat_residual=protocol.fat_residual)
        volume = sum(dfrac[t] * values[t] for t in dfrac)
        return _blur(volume, daffine, blur) * bias

    b0 = clean(0.0)
    brain = (dfrac["gm"] + dfrac["wm"]) > 0.5
    sigma = float(np.median(b0[brain])) / scanner.snr.get("dwi", protocol.snr)
    volumes = [read_out(b0 if b == 0 else clean(b), protocol, sigma, erng)
               for b in cfg.bvalues]
    peak = max(_tissue_signals("dwi", LITERATURE_1P5T, scanner).values())
    image = _to_int16_image(np.stack(volumes, axis=3) / peak, daffine, 1000.0)
    shift_mm = block_mean(shift, os_) / os_[protocol.pe_axis] * voxel[protocol.pe_axis]
    return image, {"tilt_deg": round(tilt, 3), "frontal_peak_hz": round(peak_hz, 3),
                   "peak_displacement_mm": round(float(np.abs(shift_mm).max()), 3),
                   "noise_sigma": round(sigma / peak * 1000.0, 4)}


def _bvecs(cfg: DemoConfig) -> np.ndarray:
    vecs, k = [], 0
    for b in cfg.bvalues:
        if b == 0:
            vecs.append(np.zeros(3))
        else:
            vecs.append(BVECS_6[k % len(BVECS_6)])
            k += 1
    return np.array(vecs).T


def _sidecar(contrast: str, cfg: DemoConfig) -> dict:
    p = cfg.scanner().protocol_for(contrast)
    meta = {"MagneticFieldStrength": 1.5, "RepetitionTime": p.tr / 1000,
            "EchoTime": p.te / 1000, "FlipAngle": p.flip, "PulseSequenceType": p.sequence,
            "Simulated": True}
    if p.ti:
        meta["InversionTime"] = p.ti / 1000
    if contrast == "dwi" and cfg.epi is not None:
        meta.update(_epi_protocol(cfg).sidecar())
    elif contrast == "dwi":
        meta.update(PhaseEncodingDirection="j")
        if max(cfg.epi_peak_displacement_mm) > 0:  # undistorted: no read-out time
            meta.update(TotalReadoutTime=0.05)
    return meta


def _write_subject(root: Path, sub: str, images: dict[str, nib.Nifti1Image],
                   cfg: DemoConfig) -> None:
    anat, dwi = root / sub / "anat", root / sub / "dwi"
    anat.mkdir(parents=True)
    for contrast in ANAT_CONTRASTS:
        if contrast not in images:
            continue
        nib.save(images[contrast], str(anat / f"{sub}_{contrast}.nii.gz"))
        write_json(anat / f"{sub}_{contrast}.json", _sidecar(contrast, cfg), sort_keys=True)
    if "dwi" not in images:
        return
    dwi.mkdir(parents=True)
    nib.save(images["dwi"], str(dwi / f"{sub}_dwi.nii.gz"))
    write_json(dwi / f"{sub}_dwi.json", _sidecar("dwi", cfg), sort_keys=True)
    (dwi / f"{sub}_dwi.bval").write_text(" ".join(f"{b:g}" for b in cfg.bvalues) + "\n")
    (dwi / f"{sub}_dwi.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in _bvecs(cfg)) + "\n")


_TEMPLATES: dict[HeadLayers | None, Template] = {}


def load_template(head: HeadLayers | None = None) -> Template:
    """The template (with this head), loaded once per process: the head takes ~10 s."""
    if head not in _TEMPLATES:
        _TEMPLATES.clear()
        _TEMPLATES[head] = Template.load(head)
    return _TEMPLATES[head]


def _subject_job(args: tuple[DemoConfig, int, str]) -> tuple[str, dict]:
    cfg, index, tmp_root = args
    sub = subject_label(index)
    images, params = simulate_subject(load_template(cfg.head), cfg, index)
    _write_subject(Path(tmp_root), sub, images, cfg)
    return sub, params


def subject_label(index: int) -> str:
    return f"sub-{index + 1:03d}"


def cohort_name(cfg: DemoConfig) -> str:
    """The dataset's Name: it says whether the cohort has a head and an EPI b=0.

    Models record their training data's Name (`ModelMetadata.training["data"]`), and
    `mri2mri-register --via` warns by it (`runtime.registration.recipes`): the benchmark
    found models trained without a head or EPI worse than direct registration there.
    """
    extras = [what for what, on in (("head", cfg.head), ("EPI b=0", cfg.epi)) if on is not None]
    return "mri2mri simulated demo cohort" + (f" ({', '.join(extras)})" if extras else "")


def _dataset_description(cfg: DemoConfig, params: dict[str, dict]) -> dict:
    simulation = asdict(cfg)
    for key in ("shift", "head", "epi", "contrasts", "variety"):  # unset: as before them
        if getattr(cfg, key) is None:
            del simulation[key]
    if cfg.epi is not None:
        simulation["epi"] = asdict(_epi_protocol(cfg))
    limits = "no vessels (no MRA), no skull or scalp, isotropic diffusion, no motion"
    if cfg.head is not None:
        limits = ("no vessels (no MRA), no face, eyes, neck or skull base, isotropic diffusion, "
                  "no motion")
    return dataset_description(
        cohort_name(cfg), "raw",
        [generated_by("mri2mri", "mri2mri-data demo: simulated phantom, not real data")],
        License="CC BY 4.0 (simulation); anatomy from the MNI ICBM152 2009c template",
        ReferencesAndLinks=[
            "Fonov VS et al., NeuroImage 2011;54:313-327 and NeuroImage 2009;47:S102 "
            "(MNI ICBM152 2009 template, via nilearn)",
            "Tissue parameters and sequence models: see mri2mri.data.simulate.tissue",
        ],
        SimulatedPhantom=True, SimulationParameters=simulation,
        Limits=limits,
        SubjectParameters=params)


def generate_cohort(out_dir: str | Path, *, subjects: int = 12, seed: int = 0,
                    resolution: float = 2.0, preview: bool = False, jobs: int = 1,
                    overwrite: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    shift: AcquisitionShift | None = None, head: bool = False,
                    epi: bool = False, contrasts: Sequence[str] | None = None,
                    variety: Variety | None = None, dwi_distortion: bool = True) -> Path:
    """Write a simulated BIDS cohort to `out_dir`; deterministic for a seed.

    `shift` images the same subjects (same seed: same anatomy and noise draws) with
    another simulated scanner's acquisition (see `mri2mri.data.simulate.shift`).
    `head` adds skull and scalp around the brain (`mri2mri.data.simulate.head`), `epi`
    reads the DWI out with the EPI model of `mri2mri.data.simulate.epi`; `contrasts`
    (of T1w, T2w, PDw, dwi) makes only those images; `variety` draws a random scanner,
    lesions and skull stripping per subject (`mri2mri.data.simulate.variety`);
    without `dwi_distortion` the DWI is undistorted (no susceptibility displacement; EPI:
    a TotalReadoutTime of 0), every random draw the same.

    The dataset is built in a temporary sibling folder and renamed into place,
    so an interrupted run leaves nothing behind.
    """
    out = Path(out_dir)
    if subjects < 1:
        raise InputError(None, "--subjects must be at least 1")
    if not 0.5 <= resolution <= 8:
        raise InputError(None, f"--resolution {resolution} mm is outside 0.5-8 mm")
    if not out.parent.is_dir():
        raise InputError(out, f"parent directory {out.parent} does not exist")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "exists and is not empty; pass --overwrite to replace it")
    require_module("nilearn", "data", "the demo cohort (MNI152 template)")
    if preview:
        require_module("matplotlib", "data", "the cohort preview")
    cfg = DemoConfig(subjects=subjects, seed=seed, resolution=float(resolution),
                     shift=None if shift is None or shift.empty else shift,
                     head=HeadLayers() if head else None, epi=EpiProtocol() if epi else None,
                     contrasts=None if contrasts is None else tuple(contrasts),
                     variety=variety if variety is not None and variety.active else None)
    if not dwi_distortion:
        cfg = replace(cfg, epi_peak_displacement_mm=(0.0, 0.0), epi=None if cfg.epi is None
                      else replace(cfg.epi, total_readout_time=0.0))
    with atomic_dir(out) as tmp:
        tasks = [(cfg, i, str(tmp)) for i in range(subjects)]
        params = dict(map_jobs(_subject_job, tasks, jobs, progress))
        write_dataset_files(tmp, _dataset_description(cfg, params),
                            readme=readme(head=head, epi=epi, dwi_distortion=dwi_distortion),
                            ignore=[PREVIEW_FILE] if preview else [])
        (tmp / "participants.tsv").write_text(
            "participant_id\tsimulated\n" + "".join(f"{s}\tyes\n" for s in sorted(params)))
        if preview:
            from ..preview import write_preview

            write_preview(tmp, subject_label(0), tmp / PREVIEW_FILE)
    return out
