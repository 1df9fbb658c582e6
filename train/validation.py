"""Validation at two scales: a fixed slice subset every epoch, whole volumes now and then.

- `SubsetValidation`: a seeded, fixed subset of the validation subjects'
  foreground slices, read from the slice cache and scored on the training device
  (2D metrics, in each subject's target intensity scale, inside the foreground).
  Cheap enough for every epoch; it selects ``best.pt``.
- `validation_disagreement`: the disagreement figure of each validation subject
  (`mri2mri.runtime.synthesis.disagreement`, the same functions the runtime calls), read
  from the slice cache: the reference the model records for `mri2mri-run`'s check (the
  feature, contrast and histogram references: `mri2mri.train.ood_reference`).
- `full_validation`: every validation subject synthesized whole through the
  runtime's restore path and scored with the 3D metrics of `mri2mri.train.metrics`
  (CPU), one subject in memory at a time, shared out over the ranks of a
  distributed run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mri2mri.data.cohort import Subject
from mri2mri.runtime.imaging.preprocess import restore_volume
from mri2mri.runtime.imaging.slicing import SliceGeometry, stack_context
from mri2mri.runtime.metadata import Normalisation
from mri2mri.runtime.synthesis.disagreement import Predict, chosen_slices, measure

from .baseline import IntensityLUT
from .cache import CachedSubject
from .dataset import context_stacks
from .metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE, volume_metrics
from .prepare import load_subject

METRICS = ("mae", "psnr", "ssim")
#: Default size of the per-epoch validation subset (slices).
SUBSET_SLICES = 256


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS}


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian (sigma SSIM_SIGMA, radius 3.5 sigma) over (N, 1, H, W), reflected."""
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return F.conv2d(x, kernel.view(1, 1, 1, -1))


def slice_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                  ) -> dict[str, float]:
    """MAE, PSNR and mean 2D SSIM of (N, 1, H, W) slices inside a boolean mask.

    As `volume_metrics`, in 2D: the peak is the target's range inside the mask.
    """
    pred, target = pred.float(), target.float()
    inside = target[mask]
    peak = float(inside.max() - inside.min()) or 1.0
    diff = (pred - target)[mask]
    mse = float((diff * diff).mean())
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    mx, my = _gaussian_blur(pred), _gaussian_blur(target)
    vx = _gaussian_blur(pred * pred) - mx * mx
    vy = _gaussian_blur(target * target) - my * my
    cxy = _gaussian_blur(pred * target) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return {"mae": float(diff.abs().mean()),
            "psnr": float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse)),
            "ssim": float(ssim_map[mask].mean())}


class SubsetValidation:
    """A fixed subset of validation slices (seeded), scored on the training device."""

    def __init__(self, subjects: Sequence[CachedSubject], n_slices: int, seed: int,
                 context: int) -> None:
        kept = [(i, int(z)) for i, s in enumerate(subjects) for z in s.keep]
        if not kept:
            raise ValueError("the validation subjects have no foreground slices")
        rng = np.random.default_rng([seed, 2])  # its own stream: not the epoch orders'
        chosen = sorted(rng.choice(len(kept), size=min(n_slices, len(kept)), replace=False))
        self.subjects = list(subjects)
        self.context = context
        self.slices: dict[int, list[int]] = {}
        for k in chosen:
            i, z = kept[k]
            self.slices.setdefault(i, []).append(z)

    def __len__(self) -> int:
        return sum(len(v) for v in self.slices.values())

    def _read(self, subject: CachedSubject, zs: list[int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stacks = context_stacks(subject.array("sources"), zs, self.context)
        return (stacks, np.asarray(subject.array("target")[zs], np.float32),
                np.asarray(subject.array("mask")[zs]).astype(bool)[:, None])

    @torch.no_grad()
    def evaluate(self, predict: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """Mean over subjects of the subset metrics; `predict` maps a batch to (N, 1, H, W)."""
        rows = []
        for i, zs in self.slices.items():
            subject = self.subjects[i]
            stacks, target, mask = self._read(subject, zs)
            out = torch.cat([predict(torch.from_numpy(stacks[b:b + batch_size]).to(device))
                             .float() for b in range(0, len(zs), batch_size)])
            rows.append(self._score(out, target, mask, scale=subject.target_scale, device=device))
        return mean_metrics(rows)

    def evaluate_lut(self, lut: IntensityLUT, device: torch.device) -> dict[str, float]:
        """The look-up-table baseline on the same slices (centre slice of each source)."""
        rows = []
        centre = [c * (2 * self.context + 1) + self.context
                  for c in range(self.subjects[0].array("sources").shape[1])]
        for i, zs in self.slices.items():
            subject = self.subjects[i]
            stacks, target, mask = self._read(subject, zs)
            out = torch.from_numpy(lut.predict(stacks[:, centre])).to(device)
            rows.append(self._score(out, target, mask, scale=subject.target_scale, device=device))
        return mean_metrics(rows)

    @staticmethod
    def _score(out: torch.Tensor, target: np.ndarray, mask: np.ndarray, *, scale: float,
               device: torch.device) -> dict[str, float]:
        # Restore both to the subject's target scale, as `restore_volume` does (clip at 0).
        pred = ((out + 1) * (scale / 2)).clamp_min(0)
        truth = (torch.from_numpy(target).to(device) + 1) * (scale / 2)
        return slice_metrics(pred, truth, torch.from_numpy(mask).to(device))


def full_validation(predict: Callable[[np.ndarray], np.ndarray], subjects: Sequence[Subject],
                    *, sources: Sequence[str], target: str, geometry: SliceGeometry,
                    norm: Normalisation, context: int, lut: IntensityLUT | None = None,
                    rank: int = 0, world: int = 1
                    ) -> list[tuple[dict[str, float], dict[str, float] | None]]:
    """3D metrics of whole validation volumes: this rank's share (every world-th subject).

    Each subject is prepared from its files, synthesized whole (all slices, stacked
    with `context`), restored through the runtime's path with the subject's own
    target scale (an MR image's gain is arbitrary), and compared with its target on
    the source grid inside the first source's foreground. Returns (model, LUT)
    metric rows; the LUT row is None without `lut`.
    """
    rows = []
    for subject in list(subjects)[rank::world]:
        data = load_subject(subject, sources, target, geometry=geometry, norm=norm)
        pred = predict(stack_context(data.prepared.slices, context))
        model = volume_metrics(restore_volume(pred, data.prepared, data.target_scale),
                               data.target_volume, data.mask_volume)
        baseline = None
        if lut is not None:
            baseline = volume_metrics(
                restore_volume(lut.predict(data.prepared.slices), data.prepared,
                               data.target_scale), data.target_volume, data.mask_volume)
        rows.append((model, baseline))
    return rows


def validation_disagreement(predict: Predict, subjects: Sequence[CachedSubject], context: int
                            ) -> list[float]:
    """The disagreement figure of each subject, as `mri2mri-run` measures it on an input.

    The cache holds exactly what the runtime prepares (every slice of the sources, and
    the first source's foreground as padded slices), so the same slices are chosen and
    perturbed. Subjects without foreground are left out.
    """
    figures = []
    for subject in subjects:
        mask = np.asarray(subject.array("mask")).astype(bool)
        zs = chosen_slices(mask)
        figure = measure(predict, context_stacks(subject.array("sources"), zs, context), mask[zs])
        if figure is not None:
            figures.append(figure.value)
    return figures
