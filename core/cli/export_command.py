"""``defectlab export``: a run's model as one file for deployment, checked against the run."""

from __future__ import annotations

import click
from defectlab.cli.options import inference_options
from defectlab.runtime.formats import SUFFIXES
from defectlab.workflows.export import DEFAULT_OPSET, EXPORTERS, MIN_OPSET, PARITY_IMAGES


@click.command("export")
@click.argument("run", type=click.Path(exists=True))
@click.option("--format", "file_format", type=click.Choice(list(SUFFIXES)), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default RUN/best.onnx or .torchscript).")
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--opset", type=click.IntRange(MIN_OPSET), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset of the file.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default="auto", show_default=True,
              help="ONNX: torch's dynamo exporter, the TorchScript-based legacy one, or dynamo with legacy as the "
                   "fallback.")
@click.option("--threshold", type=click.FloatRange(0, min_open=True),
              help="Decision threshold written into the file (default: the one `predict` uses for the run).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the file with the run on the run's validation images.")
@click.option("--images", type=click.IntRange(1), default=PARITY_IMAGES, show_default=True,
              help="Validation images the check predicts.")
@click.option("--tolerance", type=click.FloatRange(0, min_open=True),
              help="Largest difference the check accepts (default per task; see docs/deploy.md).")
@inference_options("; computed inside the exported graph")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def export_command(run: str, file_format: str, out: str | None, which: str, opset: int, exporter: str,
                   threshold: float | None, check: bool, images: int, tolerance: float | None, tta: str | None,
                   logit_adjustment: float | None, overwrite: bool) -> None:
    """Export the model of RUN to ONNX or TorchScript, preprocessing inside.

    The file takes raw uint8 images (N, H, W, C) of any size and batch, and holds the class
    names, task, threshold and defectlab version as metadata. The file and the run then
    predict the run's validation images; the command prints the largest difference and the
    agreement of the decisions, and fails if they differ beyond the tolerance. Predict with
    the file: `defectlab predict FILE IMAGES...` (onnxruntime only).
    """
    from defectlab.workflows.export import export

    result = export(run, file_format, out, which=which, opset=opset, exporter=exporter, threshold=threshold,
                    check=check, images=images, tolerance=tolerance, overwrite=overwrite, tta=tta,
                    logit_adjustment=logit_adjustment)
    click.echo(result.summary())


COMMANDS = [export_command]
