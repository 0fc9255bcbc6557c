"""``defectlab pretrain``: self-supervised pretraining of an encoder (MAE, DINO, ...) on unlabelled images."""

from __future__ import annotations

import click


@click.command("pretrain")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, help="Override any config key, e.g. --set ssl.mask_ratio=0.9.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/pretrain-<time>).")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), help="Continue a killed pretraining.")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
@click.option("--epochs", type=int, help="Shortcut for --set train.epochs=N.")
def pretrain_command(config: str | None, overrides: tuple[str, ...], out: str | None, resume: str | None,
                     overwrite: bool, epochs: int | None) -> None:
    """Pretrain the [model] encoder with the [ssl] objective on the images of [data] (labels ignored).

    The run directory is a training run's (config.json, metrics.jsonl with the objective's own
    numbers, last.pt/best.pt, report.html, pictures/ for objectives that draw) plus encoder.pt:
    the encoder alone, which `defectlab train CONFIG --init-from RUN` loads.
    """
    from defectlab.training.distributed import world_from_environment
    from defectlab.workflows.pretrain import pretrain

    if (config is None) == (resume is None):
        raise click.UsageError("give a CONFIG file, or --resume RUN (one of them)")
    if resume is not None and overwrite:
        raise click.UsageError("--overwrite starts a run afresh; it cannot go with --resume")
    overrides = overrides + ((f"train.epochs={epochs}",) if epochs is not None else ())
    run = pretrain(config, out=out, overrides=overrides, resume=resume, overwrite=overwrite)
    if world_from_environment().is_main:
        last = run.metrics[-1] if run.metrics else {}
        shown = {k: v for k, v in last.items() if k.startswith(("train/", "val/"))}
        click.echo("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        for warning in run.status.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"encoder: {run.folder / 'encoder.pt'}\nreport: {run.folder / 'report.html'}")


COMMANDS = [pretrain_command]
