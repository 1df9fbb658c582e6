"""Tissue relaxation parameters at 1.5 T and the signal equations of the IXI protocols.

Sources of the tissue values (representative in-vivo 1.5 T values; per subject
each is varied by up to ±10 %):

* GM and WM T2: Stanisz GJ et al., "T1, T2 relaxation and magnetization transfer
  in tissue at 3T", Magn Reson Med 2005;54:507-512 (Table 1 also lists 1.5 T:
  WM T2 72 ms, GM T2 95 ms).
* GM and WM T1 at 1.5 T: Rooney WD et al., "Magnetic field and tissue dependencies
  of human brain longitudinal 1H2O relaxation in vivo", Magn Reson Med
  2007;57:308-318 (WM ≈ 0.7 s, GM ≈ 1.2 s, CSF ≈ 4.3 s at 1.5 T).
* CSF T2 ≈ 2 s: Spijkerman JM et al., "T2 mapping of cerebrospinal fluid: 3 T
  versus 7 T", MAGMA 2018;31:415-424.
* Proton density (water content relative to CSF): WM 0.69, GM 0.80, CSF 1.0,
  Tofts P (ed.), "Quantitative MRI of the Brain", Wiley 2003, ch. 4.
* Mean diffusivity (b=1000 signal): WM 0.7, GM 0.8, CSF 3.0 × 10⁻³ mm²/s,
  Pierpaoli C et al., Radiology 1996;201:637-648.

Head tissues outside the brain (``mri2mri-data demo --head``; see `head`), 1.5 T:

* Subcutaneous fat T1 343 ms, T2 58 ms; skeletal muscle T1 1008 ms, T2 44 ms:
  de Bazelaire CMJ et al., "MR imaging relaxation times of abdominal and pelvic
  tissues measured in vivo at 3.0 T: preliminary results", Radiology
  2004;230:652-659 (their 1.5 T column). Skin is given the muscle values.
* Cortical bone: T2* ~0.4-0.5 ms (Reichert ILH et al., "Magnetic resonance
  imaging of cortical bone with ultrashort TE pulse sequences", Magn Reson
  Imaging 2005;23:611-618), so no signal at any TE used here; T1 ~250 ms
  (assumed, irrelevant once T2 is that short); its water content gives PD ~0.2.
* Proton density (relative to CSF; assumptions from water content): muscle 0.77
  (~76 % water), fat 0.9 (lipid proton density close to water's).
* Mean diffusivity: muscle 1.5 × 10⁻³ mm²/s (isotropic mean of skeletal-muscle
  DTI, e.g. Galbán CJ et al., Eur J Appl Physiol 2004;93:253-262); fat 0.01 ×
  10⁻³ mm²/s (lipid barely diffuses; irrelevant after fat suppression); bone 0.
* Fat suppression of the DWI (spectral fat saturation): it saturates the
  methylene and methyl peaks but not the olefinic (5.3 ppm) and glycerol
  (4.2 ppm) peaks next to water, ~9 % of the fat signal (Hamilton G et al.,
  "In vivo characterization of the liver fat 1H MR spectrum", NMR Biomed
  2011;24:784-790): the residual fraction `FAT_RESIDUAL`.
* Not modelled: the J-coupling that keeps fat bright on turbo spin echo T2w
  (fat comes out about as bright as WM on the simulated T2w/PDw); diploic
  marrow inside the skull.

IXI protocol parameters (brain-development.org, Philips 1.5 T, Guy's Hospital):
T1w 3D T1-TFE TR 9.8 ms, TE 4.6 ms, flip 8°; T2w and PD dual-echo turbo spin
echo TR 8178 ms, TE 100 / 8 ms; DWI single-shot spin-echo EPI, TE ≈ 100 ms.

Assumption, stated: IXI's T1-TFE images show WM brighter than GM. A plain
spoiled gradient echo with these TR/flip and the literature T1s would make GM
slightly brighter than WM, so the TFE readout is modelled with the inversion
prepulse such sequences use (TI 1100 ms, shot interval 3000 ms, centric
ordering: the k-space centre is read right after the inversion delay).
The DWI repetition time is not published; 12 s (long-TR SE-EPI) is assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TISSUES = ("gm", "wm", "csf")


@dataclass(frozen=True)
class Tissue:
    t1: float  # ms
    t2: float  # ms
    pd: float  # relative proton density
    md: float  # mean diffusivity, mm^2/s

    def scaled(self, factors: np.ndarray) -> Tissue:
        return Tissue(*(np.asarray(list(asdict(self).values())) * factors).tolist())


LITERATURE_1P5T: dict[str, Tissue] = {
    "gm": Tissue(t1=1200.0, t2=95.0, pd=0.80, md=0.8e-3),
    "wm": Tissue(t1=700.0, t2=72.0, pd=0.69, md=0.7e-3),
    "csf": Tissue(t1=4300.0, t2=2000.0, pd=1.00, md=3.0e-3),
}

#: Tissues outside the brain (``--head``): kept apart from LITERATURE_1P5T so that the
#: brain-only cohort draws the same random numbers as before.
HEAD_TISSUES = ("bone", "muscle", "fat")
HEAD_1P5T: dict[str, Tissue] = {
    "bone": Tissue(t1=250.0, t2=0.45, pd=0.20, md=0.0),
    "muscle": Tissue(t1=1008.0, t2=44.0, pd=0.77, md=1.5e-3),
    "fat": Tissue(t1=343.0, t2=58.0, pd=0.90, md=0.01e-3),
}
#: Fraction of the fat signal left by the DWI's spectral fat saturation (Hamilton 2011).
FAT_RESIDUAL = 0.09

#: T2* taken as a fraction of T2 for the gradient-echo T1w (TE 4.6 ms makes it minor).
T2STAR_FRACTION = 0.7


@dataclass(frozen=True)
class Protocol:
    """One IXI acquisition's sequence parameters (times in ms, angles in degrees)."""

    name: str
    sequence: str
    tr: float
    te: float
    flip: float = 90.0
    ti: float = 0.0
    shot_interval: float = 0.0


PROTOCOLS: dict[str, Protocol] = {
    "T1w": Protocol("T1w", "3D T1-TFE (inversion-prepared spoiled gradient echo)",
                    tr=9.8, te=4.6, flip=8.0, ti=1100.0, shot_interval=3000.0),
    "T2w": Protocol("T2w", "turbo spin echo", tr=8178.0, te=100.0),
    "PDw": Protocol("PDw", "turbo spin echo", tr=8178.0, te=8.0),
    "dwi": Protocol("dwi", "single-shot spin-echo EPI", tr=12000.0, te=100.0),
}


def signal(contrast: str, tissue: Tissue, bvalue: float = 0.0,
           protocol: Protocol | None = None) -> float:
    """Noise-free signal of one pure tissue for one protocol (arbitrary units).

    `protocol` replaces the IXI protocol of `contrast` (a simulated other scanner).
    """
    p = protocol if protocol is not None else PROTOCOLS[contrast]
    if contrast == "T1w":
        # Longitudinal magnetisation after inversion (recovering over TI, from a
        # shot-interval-limited start), read by a low-flip spoiled gradient echo.
        e_ti = np.exp(-p.ti / tissue.t1)
        e_shot = np.exp(-p.shot_interval / tissue.t1)
        mz = abs(1.0 - 2.0 * e_ti + e_shot)
        return float(tissue.pd * mz * np.sin(np.deg2rad(p.flip))
                     * np.exp(-p.te / (T2STAR_FRACTION * tissue.t2)))
    # Spin echo: T1 saturation by TR, T2 decay by TE, diffusion attenuation by b.
    s = tissue.pd * (1.0 - np.exp(-p.tr / tissue.t1)) * np.exp(-p.te / tissue.t2)
    return float(s * np.exp(-bvalue * tissue.md))


def subject_tissues(rng: np.random.Generator, variation: float = 0.10,
                    literature: dict[str, Tissue] = LITERATURE_1P5T) -> dict[str, Tissue]:
    """Literature tissues with every parameter varied by up to ±`variation` (uniform)."""
    return {name: t.scaled(rng.uniform(1 - variation, 1 + variation, size=4))
            for name, t in literature.items()}
