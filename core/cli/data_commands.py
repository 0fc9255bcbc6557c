"""``defectlab check-data``: decode every image and mask of a dataset and list the files it cannot use."""

from __future__ import annotations

import csv
import io
import os
import sys
from contextlib import nullcontext

import click
from defectlab.plugin_system.naming import counted
from defectlab.workflows.check_data import PROBLEM_COLUMNS, find_problems


@click.command("check-data")
@click.argument("dataset")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write the CSV of problems to FILE instead of stdout.")
@click.option("--workers", type=click.IntRange(min=1), default=min(8, os.cpu_count() or 1), show_default=True,
              help="Threads decoding images.")
def check_data_command(dataset: str, out: str | None, workers: int) -> None:
    """Decode every image and mask of DATASET and list unreadable or mislabelled files as CSV.

    DATASET is a path (its format is detected) or NAME[:VALUE], e.g. `elpv:mono`. The CSV has
    the columns key,path,problem; a summary line goes to stderr. Problems do not make the
    command fail: it is a report.
    """
    from defectlab.data.datasets import open_dataset
    from defectlab.plugin_system.files import write_text

    data = open_dataset(dataset)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROBLEM_COLUMNS)
    count = 0
    results = find_problems(data, workers)
    progress = (click.progressbar(results, length=len(data) + 1, label="checking", file=sys.stderr)
                if sys.stderr.isatty() else nullcontext(results))
    with progress as rows:
        for problems in rows:
            writer.writerows(problems)
            count += len(problems)
    if out:
        write_text(out, buffer.getvalue())
    else:
        click.echo(buffer.getvalue(), nl=False)
    click.echo(f"checked {counted(len(data), 'image')}: {counted(count, 'problem')}", err=True)


COMMANDS = [check_data_command]
