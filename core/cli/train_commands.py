"""``defectlab train``, ``evaluate``, ``predict`` and ``report``: runs in, run directories and tables out."""

from __future__ import annotations

from typing import Any

import click
from defectlab.cli.options import inference_options
from defectlab.cli.output import echo_json
from defectlab.runs.tables import format_table


@click.command("train")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, help="Override any config key, e.g. --set train.lr=1e-4.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/train-<time>).")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), help="Continue a killed run from its last.pt.")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
@click.option("--init-from", help="RUN_OR_CHECKPOINT whose backbone initialises the model (head re-initialised).")
@click.option("--linear-probe/--finetune", default=None,
              help="Train the head only on a frozen backbone, or fine-tune (the config's train.linear_probe).")
@click.option("--epochs", type=int, help="Shortcut for --set train.epochs=N.")
def train_command(config: str | None, overrides: tuple[str, ...], out: str | None, resume: str | None,
                  overwrite: bool, init_from: str | None, linear_probe: bool | None, epochs: int | None) -> None:
    """Train the components of CONFIG into a run directory.

    The run directory holds config.json, splits.csv, metrics.jsonl, last.pt/best.pt,
    run.json, the test evaluation under eval/, curves.png and report.html. A killed run
    continues with --resume RUN; a config with [[stages]] trains each stage from the previous
    one's backbone (staged transfer).
    """
    from defectlab.training.distributed import world_from_environment
    from defectlab.workflows.train import train

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file, or --resume RUN")
    if config is not None and resume is not None:
        raise click.UsageError("give either a CONFIG file or --resume RUN, not both")
    overrides = overrides + ((f"train.epochs={epochs}",) if epochs is not None else ())
    if resume is not None and (init_from or linear_probe is not None):
        raise click.UsageError("--init-from and --linear-probe/--finetune cannot change a resumed run")
    if resume is not None and overwrite:
        raise click.UsageError("--overwrite starts a run afresh; it cannot go with --resume")
    run = train(config, out=out, overrides=overrides, resume=resume, init_from=init_from, linear_probe=linear_probe,
                overwrite=overwrite)
    if world_from_environment().is_main:  # under torchrun, once
        _print_result(run)


def _print_result(run: Any) -> None:
    """Where the report is, after a staged run's table of stages (each run printed its test scores as it ended)."""
    from defectlab.runs.report import comparison_rows

    if run.stages:
        rows, columns = comparison_rows(run.stages)
        click.echo(format_table(columns, rows))
    click.echo(f"report: {run.folder / 'report.html'}")


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True))
@click.option("--data", "dataset", help="DATASET to evaluate on, whole (default: the run's own test split).")
@click.option("--split", default="test", show_default=True, help="Split of the run's own data (without --data).")
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the results (default RUN/evaluate-<time>).")
@inference_options()
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def evaluate_command(run: str, dataset: str | None, split: str, which: str, out: str | None, tta: str | None,
                     logit_adjustment: float | None, overwrite: bool, as_json: bool) -> None:
    """Score a trained RUN with its evaluators; save metrics.json, plots and misclassified.csv."""
    from defectlab.workflows.evaluate import evaluate_run

    results = evaluate_run(run, dataset, split=split, which=which, out=out, overwrite=overwrite, tta=tta,
                           logit_adjustment=logit_adjustment)
    if as_json:
        echo_json(results)
        return
    scores = results["scores"]
    click.echo(format_table(["metric", "value"], [{"metric": k, "value": v} for k, v in scores.items()]))
    for name, details in results["details"].items():
        matrix = details.get("confusion_matrix") if isinstance(details, dict) else None
        if matrix:
            classes = details.get("confusion_labels") or details.get("classes") or [str(i) for i in range(len(matrix))]
            click.echo(f"\nconfusion matrix ({name}; rows = true class)")
            click.echo(format_table(["", *classes], [[c, *row] for c, row in zip(classes, matrix)]))
        if isinstance(details, dict) and details.get("f1_best_text"):
            click.echo(f"F1 at its best confidence: {details['f1_best_text']}")
    click.echo(f"\nresults: {results['folder']}")


@click.command("predict")
@click.argument("run", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True)
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, min_open=True),
              help="Segmentation: defect probability above which a pixel is defect (0.5). Detection: score "
                   "below which a box is left out (the run's best-F1 confidence, else 0.25). Anomaly: score from "
                   "which an image is a defect (the run's best-F1 threshold).")
@click.option("--slice", "slice_size", type=click.IntRange(16), help="Detection: predict in square slices of N "
              "pixels and merge their boxes (small defects on large images).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Share of a slice that neighbouring slices overlap.")
@inference_options("; an exported file's own")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier prediction.")
@click.option("--resume", is_flag=True, help="Continue a stopped prediction into --out: the images in its CSV are "
              "skipped, the others appended (same model and options only).")
def predict_command(run: str, images: tuple[str, ...], out: str, which: str, batch_size: int,
                    threshold: float | None, slice_size: int | None, overlap: float, tta: str | None,
                    logit_adjustment: float | None, overwrite: bool, resume: bool) -> None:
    """Predict IMAGES (files or folders) with a trained RUN and write a CSV of predictions.

    RUN is a run folder, a checkpoint, or a file `defectlab export` wrote: a .onnx file
    predicts with onnxruntime alone (no torch needed), a .torchscript file with torch. A detector also writes the boxes as JSON beside the CSV and draws them on the images
    (<out>_boxes/); a segmentation model writes masks (<out>_masks/); an anomaly model a score,
    good/defect and an anomaly map per image (<out>_maps/). Exits 1 when no image could be
    predicted. Rows are written batch by batch, with progress on stderr (a bar, or a line every
    30 s off a terminal); a killed prediction continues with --resume.
    """
    from defectlab.workflows.predict import predict  # imports no torch: an exported file predicts without it

    result = predict(run, images, out, batch_size=batch_size, which=which, threshold=threshold,
                     overwrite=overwrite, slice_size=slice_size, overlap=overlap, tta=tta, resume=resume,
                     logit_adjustment=logit_adjustment)
    earlier = f" ({result.resumed} of the images by the earlier prediction)" if result.resumed else ""
    click.echo(f"{result.predicted} predicted, {result.failed} failed{earlier}")
    click.echo(f"predictions: {result.csv}" + (f" (and {result.masks})" if result.masks else ""))


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the comparison (default runs/report-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
def report_command(runs: tuple[str, ...], out: str | None, overwrite: bool) -> None:
    """Compare RUNS side by side (a table and overlaid curves), or rewrite one run's report.html."""
    from defectlab.runs.report import write_run_report
    from defectlab.runs.run import Run
    from defectlab.workflows.report import compare_runs

    loaded = [Run(r) for r in runs]
    if out is None and sum(len(run.stages or [run]) for run in loaded) == 1:
        click.echo(f"report: {write_run_report((loaded[0].stages or [loaded[0]])[0].folder)}")
        return
    comparison = compare_runs(loaded, out, overwrite=overwrite)
    click.echo(comparison.table())
    click.echo(f"report: {comparison.report}")


COMMANDS = [train_command, evaluate_command, predict_command, report_command]
