"""The references of the out-of-distribution checks that look at inputs as the network saw
them in training: the feature figure (`mri2mri.runtime.synthesis.features`), the contrast
figure (`mri2mri.runtime.synthesis.contrast`) and the histogram distance's threshold
(`mri2mri.runtime.synthesis.ood.calibration`).

Reference scans: each of the run's own training and validation subjects (not the
simulated prior's), prepared from its files as the runtime prepares an input, as given and
in `DRAWS` draws of the run's training augmentation (`mri2mri.train.augment`; geometry and
intensity, one draw for the whole scan: the same curve, bias field and blur on each of its
slices, as a scanner would make them). A model trained on randomised contrasts was made for
inputs like those draws; one trained without augmentation gets its subjects as given only.
The contrast figure's "wrong" scans are the same subjects' target contrast given in place
of the (first) source, drawn the same way.

Slices: the runtime's checked slices (`mri2mri.runtime.synthesis.disagreement.checked_slices`);
an augmented draw warps the foreground mask with the slice. Seeded: ``[seed, subject,
group, draw]`` (every slice of a scan draws the same augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime.imaging.preprocess import PreparedSources, prepare_sources
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.runtime.synthesis import contrast, features, ood
from mri2mri.runtime.synthesis.disagreement import checked_slices

from .augment import AugmentSpec, Transform, build_transform
from .dataset import context_stacks

#: Augmented draws per reference scan (besides the scan as given).
DRAWS = 8
#: (N, C, H, W) network inputs -> the bottleneck's (N, C', h, w) maps.
MapsOf = Callable[[np.ndarray], np.ndarray]


@dataclass
class Scan:
    """One reference scan's feature vectors and, per source, its foreground histogram."""

    vectors: np.ndarray
    histograms: dict[str, list[float]]


def draw_stacks(transform: Transform, stacks: np.ndarray, mask: np.ndarray, *, sources: int,
                rng_seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One augmented draw of a scan's network inputs (N, C, H, W) and foreground (N, H, W):
    the training transform on each slice, every slice with the same generator state."""
    out, masks = [], []
    for stack, inside in zip(stacks, mask, strict=True):
        source, target = transform(stack.reshape(sources, -1, *stack.shape[1:]),
                                   (2.0 * inside - 1.0)[None].astype(np.float32),
                                   np.random.default_rng(list(rng_seed)))
        out.append(source.reshape(stack.shape))
        masks.append(target[0] > 0)
    return np.stack(out).astype(np.float32), np.stack(masks)


def scans_of(maps_of: MapsOf, prepared: PreparedSources, meta: ModelMetadata, *,
             transform: Transform | None, draws: int, seed: Sequence[int]) -> list[Scan]:
    """A prepared subject as given and in `draws` augmented draws (none without `transform`)."""
    mask, zs = checked_slices(prepared)
    if not len(zs):
        return []
    stacks, inside = context_stacks(prepared.slices, zs, meta.context), mask[zs]
    width = stacks.shape[1] // len(meta.sources)
    found = []
    for draw in range(draws + 1 if transform is not None else 1):
        if draw:
            stacks_d, inside_d = draw_stacks(transform, stacks, inside,
                                             sources=len(meta.sources), rng_seed=[*seed, draw])
        else:
            stacks_d, inside_d = stacks, inside
        vectors = features.measure(maps_of(stacks_d), inside_d)
        centre = meta.context
        histograms = {c: ood.histogram(stacks_d[:, i * width + centre][inside_d])
                      for i, c in enumerate(meta.sources)}
        found.append(Scan(vectors, histograms))
    return found


def _prepare(subject: Subject, contrasts: Sequence[str], meta: ModelMetadata
             ) -> PreparedSources:
    return prepare_sources([subject.load(c) for c in contrasts], meta.geometry,
                           meta.normalisation, names=[f"{subject.id} {c}" for c in contrasts],
                           resample_to_first=True)


def reference_scans(maps_of: MapsOf, meta: ModelMetadata, subjects: Sequence[Subject], *,
                    draws: int = DRAWS, seed: int = 0
                    ) -> tuple[list[list[Scan]], list[list[Scan]]]:
    """Per subject, its source scans and its "wrong" scans (the target in place of the
    first source), each as given and in `draws` draws of the model's training augmentation
    (recorded in ``meta.training["augment"]``)."""
    spec = AugmentSpec(**(meta.training or {}).get("augment", {}))
    transform = build_transform(spec)
    wrong_contrasts = [meta.target, *meta.sources[1:]]
    right, wrong = [], []
    for k, subject in enumerate(subjects):
        for group, contrasts, found in ((0, meta.sources, right), (1, wrong_contrasts, wrong)):
            prepared = _prepare(subject, contrasts, meta)
            found.append(scans_of(maps_of, prepared, meta, transform=transform, draws=draws,
                                  seed=[seed, k, group]))
    return right, wrong


def references(maps_of: MapsOf, meta: ModelMetadata, subjects: Sequence[Subject], *,
               draws: int = DRAWS, seed: int = 0, **about: Any) -> dict[str, Any]:
    """The ``ModelMetadata.ood`` records of the feature, contrast and histogram checks
    (those that can be made: at least two subjects with foreground, three for the contrast
    figure); `about` goes into each (which subjects)."""
    right, wrong = reference_scans(maps_of, meta, subjects, draws=draws, seed=seed)
    about = {**about, "draws": draws, "augment": AugmentSpec(
        **(meta.training or {}).get("augment", {})).to_string()}
    records: dict[str, Any] = {}
    vectors = [[s.vectors for s in scans] for scans in right]
    if sum(any(len(v) for v in g) for g in vectors) >= 2:
        records[features.KEY] = features.reference(vectors, **about)
    try:
        records[contrast.KEY] = contrast.reference(
            vectors, [[s.vectors for s in scans] for scans in wrong], wrong=meta.target, **about)
    except ValueError:
        pass  # too few subjects with both groups: no contrast figure
    summary = (meta.training_summary or {}).get("contrasts", {})
    distances = [max(ood.hellinger(s.histograms[c], summary[c]["histogram"]) for c in summary)
                 for scans in right for s in scans if summary and len(s.vectors)]
    if distances:
        records[ood.KEY] = ood.calibration(distances, **about)
    return records


def record_lines(records: dict[str, Any]) -> list[str]:
    """Console lines about `references`' records."""
    lines = []
    if features.KEY in records:
        r = records[features.KEY]
        lines.append(f"feature statistics ({r['subjects']} training and validation subjects, "
                     f"{r['scans']} scans with augmented draws, each against the other "
                     f"subjects'): {min(r['leave_one_out']):.3f}-{max(r['leave_one_out']):.3f}; "
                     f"threshold {r['threshold']:.3g}")
    if contrast.KEY in records:
        loo = records[contrast.KEY]["leave_one_out"]
        lines.append(f"contrast figure (0 source, 1 {records[contrast.KEY]['wrong']} given as "
                     f"source; leave one subject out): source {min(loo['right']):.2f}-"
                     f"{max(loo['right']):.2f}, wrong {min(loo['wrong']):.2f}-"
                     f"{max(loo['wrong']):.2f}; threshold {contrast.THRESHOLD:g}")
    if ood.KEY in records:
        r = records[ood.KEY]
        lines.append(f"histogram distance of augmented reference scans: median "
                     f"{r['distance_median']:.3f}, 90th percentile {r['distance_p90']:.3f}, "
                     f"largest {r['distance_max']:.3f}; threshold {r['threshold']:g}")
    return lines


def cohort_subjects(data: str, split: dict[str, list[str]]) -> list[Subject]:
    """The training and validation subjects of a run's split, from its cohort folder."""
    cohort = Cohort.discover(data)
    return [cohort.subject(sid) for name in ("train", "validation") for sid in split.get(name, [])]
