"""The whole pipeline on the offline demo cohort: what `mri2mri-demo` runs.

simulate a cohort -> train T1w->T2w (small preset) -> export to ONNX ->
synthesize T2w for a held-out subject with the torch-free runtime -> report
PSNR/SSIM/MAE against the ground truth and the look-up-table baseline, and a
figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from rich.console import Console

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.imaging.nifti import save_volume
from mri2mri.runtime.imaging.orientation import to_canonical
from mri2mri.runtime.imaging.preprocess import prepare_sources, prepare_target, restore_volume

if TYPE_CHECKING:
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

SOURCE, TARGET = "T1w", "T2w"


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    figure: Path
    synthesized: Path
    model: Path
    subject: str
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]


def write_figure(source: nib.Nifti1Image, truth: nib.Nifti1Image, synth: nib.Nifti1Image, *,
                 out: Path, title: str) -> Path:
    """Columns: input | truth | synthesized | |difference|; rows: axial, coronal, sagittal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mri2mri.data.preview import orthogonal_views, view_aspects

    vols = [to_canonical(img, np.asarray(img.dataobj, np.float32)).data
            for img in (source, truth, synth)]
    diff = np.abs(vols[2] - vols[1])
    aspects = view_aspects(to_canonical(source).affine)
    titles = [f"input {SOURCE}", f"ground truth {TARGET}", f"synthesized {TARGET}",
              "|synthesized - truth|"]
    vmax = [float(np.percentile(v[v > 0], 99.5)) for v in vols]
    vmax.append(vmax[1])
    fig, axes = plt.subplots(3, 4, figsize=(12, 9), facecolor="black")
    for col, vol in enumerate([*vols, diff]):
        for row, (sl, aspect) in enumerate(zip(orthogonal_views(vol), aspects, strict=True)):
            ax = axes[row, col]
            ax.imshow(sl, cmap="magma" if col == 3 else "gray", origin="lower", vmin=0,
                      vmax=vmax[col] * (0.5 if col == 3 else 1.0), aspect=aspect)
            ax.set_axis_off()
        axes[0, col].set_title(titles[col], color="white")
    fig.suptitle(title, color="white")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, facecolor="black")
    plt.close(fig)
    return out


def _report(result: DemoResult, train_metrics: dict, model_meta_task: str, provider: str) -> str:
    m = result.metrics
    rows = "\n".join(
        f"| {name} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['mae']:.2f} |"
        for name, v in m.items())
    mae_better = m["mri2mri (gain-matched)"]["mae"] < m["LUT baseline (gain-matched)"]["mae"]
    secs = "\n".join(f"| {k} | {v:.1f} |" for k, v in result.seconds.items())
    won = m["mri2mri (gain-matched)"]["psnr"] > m["LUT baseline (gain-matched)"]["psnr"] and \
        m["mri2mri (gain-matched)"]["ssim"] > m["LUT baseline (gain-matched)"]["ssim"]
    return f"""# mri2mri demo report

Task **{model_meta_task}** on a simulated cohort (`{result.out_dir / 'data'}`), held-out
test subject **{result.subject}**, synthesized by `mri2mri-run`'s engine
(onnxruntime, {provider}) from `{result.model.name}`.

## Synthesis quality (inside the brain, in the ground truth's intensity scale)

| method | PSNR (dB) | SSIM | MAE |
| --- | --- | --- | --- |
{rows}

"As written" is the runtime's output file, put on the typical T2w intensity scale learned
in training. An MR image's global gain is arbitrary, so "gain-matched" rescales the
prediction by the subject's true T2w intensity scale (the same convention as training's
validation); this isolates the contrast translation. The look-up-table baseline maps each
T1w intensity to the mean T2w intensity seen with it in training.
**The network {'beats' if won else 'does NOT beat'} the baseline on both PSNR and SSIM**
(and has {'lower' if mae_better else 'higher'} MAE than it).

Validation during training (best epoch {train_metrics.get('best_epoch')}):
model PSNR {train_metrics['model']['psnr']:.2f} dB, SSIM {train_metrics['model']['ssim']:.4f};
LUT PSNR {train_metrics['lut']['psnr']:.2f} dB, SSIM {train_metrics['lut']['ssim']:.4f}.

![synthesis](synthesis.png)

## Wall time (s)

| step | seconds |
| --- | --- |
{secs}

Files: `data/` (BIDS cohort), `run/` (checkpoints, metrics.csv, loss.png),
`model.onnx`, `{result.synthesized.name}`, `synthesis.png`.
"""


class _Stopwatch:
    """Seconds per named stage, each timed from the end of the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._clock
        self._clock = now


@dataclass
class _HeldOut:
    """A held-out test subject's images, and its target as the runtime synthesized it."""

    subject: str
    source: nib.Nifti1Image
    truth: nib.Nifti1Image
    synth: nib.Nifti1Image
    path: Path
    synthesizer: Synthesizer


def _empty_out_dir(out: Path, overwrite: bool) -> Path:
    """`out`, created empty; a non-empty one only with `overwrite` (then emptied)."""
    if not out.parent.is_dir():
        raise InputError(out, f"parent directory {out.parent} does not exist")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "exists and is not empty; pass --overwrite to start afresh")
    if out.exists() and overwrite:
        import shutil

        shutil.rmtree(out)
    out.mkdir(exist_ok=True)
    return out


def _simulate(out: Path, *, subjects: int, seed: int, resolution: float,
              console: Console) -> Path:
    from mri2mri.data.simulate.demo_cohort import generate_cohort

    with progress_bar(console=console) as bar:
        task = bar.add_task("simulating subjects", total=subjects)
        return generate_cohort(out, subjects=subjects, seed=seed, resolution=resolution,
                               jobs=2, preview=True,
                               progress=lambda done, total: bar.update(task, completed=done))


def _synthesize_held_out(data: Path, split: dict[str, list[str]], model: Path,
                         out: Path) -> _HeldOut:
    """Synthesize the first test subject (else validation) with the torch-free runtime."""
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

    test_ids = split["test"] or split["validation"]
    subject = Cohort.discover(data).subject(test_ids[0])
    source, truth = subject.load(SOURCE), subject.load(TARGET)
    synthesizer = Synthesizer(model, device="auto")
    synth = synthesizer.synthesize({SOURCE: source})
    path = save_volume(synth, out / f"{subject.id}_desc-mri2mri_{TARGET}.nii.gz")
    return _HeldOut(subject.id, source, truth, synth, path, synthesizer)


def _evaluate(held: _HeldOut, baseline: dict, figure: Path
              ) -> tuple[dict[str, dict[str, float]], Path]:
    """Metrics of the model (as written and gain-matched) and the LUT baseline against the
    truth inside the brain, and the figure."""
    from mri2mri.train.baseline import IntensityLUT
    from mri2mri.train.metrics import volume_metrics

    meta = held.synthesizer.meta
    prepared = prepare_sources([held.source], meta.geometry, meta.normalisation, names=[SOURCE])
    truth_data = np.asarray(held.truth.dataobj, np.float32)
    mask = prepared.view.restore(prepared.mask)
    # The truth's scale exactly as training measured it: the model's own normalisation.
    _, truth_scale = prepare_target(held.truth, prepared, meta.normalisation)
    gain = truth_scale / meta.normalisation.target_scale
    synth_data = np.asarray(held.synth.dataobj, np.float32)
    lut = IntensityLUT.from_dict(baseline)
    lut_volume = restore_volume(lut.predict(prepared.slices), prepared, truth_scale)
    metrics = {
        "mri2mri (as written)": volume_metrics(synth_data, truth_data, mask),
        "mri2mri (gain-matched)": volume_metrics(synth_data * gain, truth_data, mask),
        "LUT baseline (gain-matched)": volume_metrics(lut_volume, truth_data, mask),
    }
    figure = write_figure(held.source, held.truth,
                          nib.Nifti1Image(synth_data * gain, held.synth.affine), out=figure,
                          title=f"{held.subject}: {meta.task} (held out), gain-matched")
    return metrics, figure


def run_demo(out_dir: str | Path, *, subjects: int = 12, seed: int = 0, resolution: float = 2.0,
             epochs: int | None = None, overwrite: bool = False,
             console: Console | None = None, **train_options: object) -> DemoResult:
    """Run the whole pipeline into `out_dir` and return where everything is.

    `train_options` override `TrainConfig` fields (e.g. ``slices_per_epoch``).
    """
    from mri2mri.export.onnx_export import export_checkpoint
    from mri2mri.train.checkpoint import load_checkpoint
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    console = console or Console(stderr=True)
    out = _empty_out_dir(Path(out_dir), overwrite)
    watch = _Stopwatch()

    console.rule(f"1/4 simulating {subjects} subjects at {resolution:g} mm")
    data = _simulate(out / "data", subjects=subjects, seed=seed, resolution=resolution,
                     console=console)
    watch.lap("simulate cohort")

    console.rule(f"2/4 training {SOURCE} -> {TARGET} (small preset)")
    config = TrainConfig(data=str(data), sources=[SOURCE], target=TARGET, out=str(out / "run"),
                         preset="small", seed=seed, **train_options)
    if epochs is not None:
        config.epochs = epochs
    run = train(config, console=console)
    watch.lap("train")

    console.rule("3/4 exporting to ONNX")
    model_path = out / "model.onnx"
    export = export_checkpoint(run.best_checkpoint, model_path)
    console.print(f"exported {model_path} (parity max |ONNX - PyTorch| = "
                  f"{export.max_abs_diff:.2e})")
    watch.lap("export")

    console.rule("4/4 synthesizing a held-out subject")
    state = load_checkpoint(run.best_checkpoint)
    held = _synthesize_held_out(data, state["split"], model_path, out)
    watch.lap("synthesize (ONNX Runtime)")
    metrics, figure = _evaluate(held, state["baseline"], out / "synthesis.png")
    watch.lap("evaluate and plot")
    seconds = watch.seconds
    seconds["total"] = sum(seconds.values())

    result = DemoResult(out_dir=out, report=out / "report.md", figure=figure,
                        synthesized=held.path, model=model_path, subject=held.subject,
                        metrics=metrics, seconds=seconds)
    train_metrics = {"best_epoch": run.best_epoch, "model": run.best_metrics,
                     "lut": run.baseline_metrics}
    with atomic_path(result.report) as tmp:
        tmp.write_text(_report(result, train_metrics, held.synthesizer.meta.task,
                               held.synthesizer.provider_name))
    for name, v in metrics.items():
        console.print(f"{name:28s} PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.4f}  "
                      f"MAE {v['mae']:.2f}")
    console.print(f"report: {result.report}  figure: {figure}  total {seconds['total']:.0f} s")
    return result
