"""``defectlab demo``: the ELPV story — screen a source, transfer from it, compare with training from scratch."""

from __future__ import annotations

import click
from defectlab.runs.tables import format_table
from defectlab.workflows.demo import DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the demo's runs and report "
              "(default runs/demo-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace the output of an earlier demo in --out.")
@click.option("--epochs", type=click.IntRange(1), default=DEFAULT_EPOCHS, show_default=True,
              help="Epochs of each training.")
@click.option("--image-size", type=click.IntRange(32), default=DEFAULT_IMAGE_SIZE, show_default=True,
              help="Side of the images the network sees (ELPV cells are 300x300).")
def demo_command(out: str | None, overwrite: bool, epochs: int, image_size: int) -> None:
    """Screen elpv:poly as a source for elpv:mono, transfer a ResNet-18 from it, and compare with
    training on elpv:mono from scratch (a few minutes on two CPU cores)."""
    from defectlab.workflows.demo import run_demo

    result = run_demo(out, epochs=epochs, image_size=image_size, say=click.echo, overwrite=overwrite)
    click.echo(format_table(result["columns"], result["rows"]))
    click.echo(f"\nreport: {result['report']}")


COMMANDS = [demo_command]
