"""`mri2mri-train`: a thin command-line layer over `mri2mri.train.trainer.train`."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.devices import TORCH_DEVICES, check_device

if TYPE_CHECKING:
    from .config import TrainConfig
    from .trainer import RunResult

app = typer.Typer(add_completion=False, help=__doc__)


def _stored_config(out: Path) -> dict:
    from .checkpoint import read_checkpoint

    last = out / "last.pt"
    run = read_checkpoint(last).run if last.exists() else None
    return dict(run.train_config) if run is not None else {}


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(None, f"--workers must be auto or a whole number (got {text!r})"
                         ) from None


#: The longer option helps.
HELP = {
    "augment": "Augmentation: none, light or strong, then name=value overrides, e.g. "
               "'strong,rotate=10,noise=0' or 'light,randomize=0.8' (contrast "
               "randomisation); options flip, rotate, scale, translate, gamma, contrast, "
               "bias, noise, lowres, randomize (see docs/training.md).",
    "simulated_subjects": "Simulated prior: subjects simulated at the cohort's voxel size "
                          "and trained on beside its own (0: none). Default 6.",
    "normalisation": "Intensity anchor: percentile (default: the foreground's 99.5th "
                     "percentile at 1) or median (4.5 x the foreground median at 1, so "
                     "tissue lands alike on every scanner).",
    "lut_residual": "The network corrects the look-up-table baseline: it sees the LUT's "
                    "estimate as an extra input and adds its output to it (starting from "
                    "the LUT's answer). Default off.",
    "upsample": "Decoder upsampling: transpose (pix2pix's stride-2 transposed convolution, "
                "the default) or resize (nearest x2 then a 3x3 convolution: no 2-pixel "
                "checkerboard on flat regions).",
}


@app.command()
def main_command(
    *,
    data: Annotated[Path, typer.Option("--data", help="BIDS cohort directory.")],
    source: Annotated[list[str], typer.Option("--source", help="Source contrast; repeat for "
                                              "many-to-one (channel order = option order).")],
    target: Annotated[str, typer.Option("--target", help="Target contrast.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (created).")],
    preset: Annotated[str, typer.Option(help="Architecture: small (CPU) or reference "
                                             "(pix2pix U-Net, 256x256).")] = "small",
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for split, initialisation and "
                                           "sampling.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from "
                                                          "last.pt.")] = False,
    batch_size: Annotated[int | None, typer.Option(
        help="Slices per optimizer step (the global batch, split evenly over torchrun "
             "processes).")] = None,
    slices_per_epoch: Annotated[int | None, typer.Option(help="Slices drawn per epoch.")] = None,
    l1_weight: Annotated[float | None, typer.Option(help="Weight of the L1 term next to the "
                                                         "perceptual loss.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (default: the preset's, "
                                                  "2e-4 for every preset).")] = None,
    context: Annotated[int | None, typer.Option(help="2.5D input: neighbouring slices on each "
                                                     "side, per source, as extra channels.")
                       ] = None,
    workers: Annotated[str, typer.Option(help="Data-loader worker processes per training "
                                              "process, or auto.")] = "auto",
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads per process (0: the available "
                                              "cores, shared out over processes).")] = 0,
    cache: Annotated[Path | None, typer.Option(help="Slice cache folder (default: "
                                                    "OUT/cache); share it between runs.")
                     ] = None,
    val_slices: Annotated[int | None, typer.Option(help="Validation slices scored every epoch "
                                                        "(fixed seeded subset; selects "
                                                        "best.pt).")] = None,
    full_eval_every: Annotated[int, typer.Option(help="Whole-volume validation every K epochs "
                                                      "(0: only at the end).")] = 0,
    precision: Annotated[str, typer.Option(help="auto (CUDA: bf16, else fp16; CPU: fp32), "
                                                "fp32, bf16 or fp16.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the network "
                                                            "(CUDA).")] = False,
    log_every: Annotated[int, typer.Option(help="Steps between running-loss updates.")] = 25,
    augment: Annotated[str | None, typer.Option(help=HELP["augment"])] = None,
    patience: Annotated[int | None, typer.Option(
        help="Early stopping: stop after N epochs without a better validation PSNR "
             "(0: off).")] = None,
    init_weights: Annotated[Path | None, typer.Option(
        help="Start from this checkpoint's network weights (fine-tuning a pretrained model "
             "of the same task, preset and --context).")] = None,
    simulated_subjects: Annotated[int | None, typer.Option(
        help=HELP["simulated_subjects"])] = None,
    simulated_augment: Annotated[str | None, typer.Option(help=(
        "Their augmentation, as --augment. Default 'strong,randomize=0.7'."))] = None,
    normalisation: Annotated[str | None, typer.Option(help=HELP["normalisation"])] = None,
    lut_residual: Annotated[bool | None, typer.Option(
        "--lut-residual/--no-lut-residual", help=HELP["lut_residual"])] = None,
    upsample: Annotated[str | None, typer.Option(help=HELP["upsample"])] = None,
) -> None:
    """Train a contrast-translation U-Net; writes last.pt, best.pt, metrics.csv, loss.png."""
    device = check_device(device, TORCH_DEVICES)
    from .trainer import train

    stored = _stored_config(out) if resume else {}
    config = _train_config(
        stored, {"epochs": epochs, "batch_size": batch_size, "slices_per_epoch": slices_per_epoch,
                 "l1_weight": l1_weight, "lr": lr, "context": context,
                 "cache": str(cache) if cache is not None else None, "val_slices": val_slices,
                 "augment": augment, "patience": patience, "normalisation": normalisation,
                 "init_weights": str(init_weights) if init_weights is not None else None,
                 "simulated_subjects": simulated_subjects, "simulated_augment": simulated_augment,
                 "lut_residual": lut_residual, "upsample": upsample},
        data=str(data), sources=source, target=target, out=str(out), preset=preset, seed=seed,
        workers=_workers(workers), device=device, threads=threads,
        full_eval_every=full_eval_every, precision=precision, compile=compile,
        log_every=log_every)
    result = train(config, resume=resume)
    if int(os.environ.get("RANK", "0")):
        return  # under torchrun rank 0 reports
    _print_result(result, config)


def _train_config(stored: dict[str, Any], optional: dict[str, Any], **given: Any
                  ) -> TrainConfig:
    """The run's `TrainConfig`: `given` options as they are; `optional` ones left out (None)
    take the resumed run's values (`stored`), else the Python API's defaults."""
    from .config import TrainConfig, stored_value

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    picked = {name: value if value is not None
              else stored_value(stored, name) if stored else defaults[name]
              for name, value in optional.items()}
    try:
        return TrainConfig(**given, **picked)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None


def _print_result(result: RunResult, config: TrainConfig) -> None:
    best, lut = result.best_metrics, result.baseline_metrics
    if result.stopped_early:
        typer.echo(f"stopped early after epoch {len(result.history)} (patience "
                   f"{config.patience})")
    typer.echo(f"best epoch {result.best_epoch} (whole validation volumes): PSNR "
               f"{best['psnr']:.2f} dB (LUT "
               f"{lut['psnr']:.2f}), SSIM {best['ssim']:.4f} (LUT {lut['ssim']:.4f}), MAE "
               f"{best['mae']:.4g} (LUT {lut['mae']:.4g}); {result.seconds:.0f} s -> "
               f"{result.best_checkpoint}")


def main() -> None:
    run_app(app)
