"""``defectlab demo``: a first look at the installed plugins and the built-in ELPV data."""

from __future__ import annotations

import click

from defectlab.cli.output import format_number, format_table

CELL_TYPES = ("mono", "poly")


@click.command("demo")
def demo_command() -> None:
    """Show the installed plugins and the class imbalance of ELPV's mono and poly cells."""
    from defectlab.api import create
    from defectlab.cli.catalog import plugins_command
    from defectlab.datasets import open_dataset

    click.get_current_context().invoke(plugins_command, as_json=False)
    gini, ratio = create("imbalance", "gini"), create("imbalance", "imbalance_ratio")
    rows = []
    for cell_type in CELL_TYPES:
        dataset = open_dataset(f"elpv:{cell_type}")
        counts = dataset.class_counts()
        rows.append((f"elpv:{cell_type}", len(dataset), " / ".join(str(c) for c in counts),
                     format_number(gini(counts)), format_number(ratio(counts))))
    click.echo("\nELPV solar cells (defect probability classes 0, 1/3, 2/3, 1):")
    click.echo(format_table(["dataset", "images", "class counts", "gini", "imbalance ratio"], rows))


COMMANDS = [demo_command]
