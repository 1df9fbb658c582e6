"""`mri2mri-export`: a thin command-line layer over `export_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.engine.devices import CHECK_DEVICES, check_device

from .onnx_export import DEFAULT_OPSET, TOLERANCE_FP16, TOLERANCE_FP32

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main_command(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (best.pt or last.pt).")],
    *,
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = DEFAULT_OPSET,
    fp16: Annotated[bool, typer.Option("--fp16", help="Store weights and compute in float16 "
                                                      f"(parity tolerance {TOLERANCE_FP16:g} "
                                                      f"instead of {TOLERANCE_FP32:g}).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it "
                                                                "exists.")] = False,
    check_on: Annotated[str, typer.Option("--check-on", help="Provider of the parity check: "
                                          "cpu, or cuda (the GPU the model will run on; "
                                          "TF32 off).")] = "cpu",
    ood_reference: Annotated[bool, typer.Option(
        "--ood-reference", help="First remake the feature, contrast and histogram "
        "references of the out-of-distribution checks from the checkpoint's cohort files "
        "(augmented draws of its training and validation subjects; minutes on a CPU), as "
        "training now records them; the checkpoint file is left as it is.")] = False,
    data: Annotated[Path | None, typer.Option(
        "--data", help="With --ood-reference: the cohort folder, if it moved since "
        "training.")] = None,
) -> None:
    """Export a checkpoint to a self-describing ONNX model, checked against PyTorch."""
    check_on = check_device(check_on, CHECK_DEVICES, "--check-on")
    from .onnx_export import export_checkpoint

    if ood_reference:
        report = _export_with_references(checkpoint, out, data, opset=opset, fp16=fp16,
                                         overwrite=overwrite, check_on=check_on)
    else:
        report = export_checkpoint(checkpoint, out, opset=opset, fp16=fp16,
                                   overwrite=overwrite, check_on=check_on)
    typer.echo(f"wrote {report.path} ({report.metadata.task}, opset {report.opset}, "
               f"{'fp16' if report.fp16 else 'fp32'}); onnxruntime ({report.check_on}) vs "
               f"PyTorch on {report.parity_slices} validation slices: max |diff| "
               f"{report.max_abs_diff:.2e} (tolerance {report.tolerance:g})")


def _export_with_references(checkpoint: Path, out: Path, data: Path | None,
                            **options: object) -> object:
    """`export_checkpoint` of a copy of `checkpoint` whose OOD references were remade."""
    import tempfile

    from mri2mri.train.feature_reference import add_ood_references
    from mri2mri.train.ood_reference import record_lines

    from .onnx_export import export_checkpoint

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        copy = Path(tmp) / checkpoint.name
        records = add_ood_references(checkpoint, data, out=copy)
        for line in record_lines(records):
            typer.echo(line)
        return export_checkpoint(copy, out, **options)


def main() -> None:
    run_app(app)
