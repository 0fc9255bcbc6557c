"""``defectlab convert``: write a detection dataset in another format (yolo, coco, voc)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click
from defectlab.cli.output import echo_json


@click.command("convert")
@click.argument("dataset")
@click.option("--to", "to", required=True, metavar="FORMAT",
              help="Format to write: yolo, coco or voc (a dataset format that can write).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write; a new or empty one.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A parameter of a DATASET given by name, e.g. --set count=60.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier conversion in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the record (convert.json) as JSON.")
def convert_command(dataset: str, to: str, out: str, overrides: tuple[str, ...], overwrite: bool,
                    as_json: bool) -> None:
    """Write the detection DATASET in another format: yolo, coco or voc.

    DATASET is a path (its format is detected), NAME[:VALUE] (e.g. synthetic_defects) or a
    spec such as '{name = "coco", root = "a.json", images = "img"}'. Each image keeps its
    split; images are hard-linked where possible, else copied. The folder gets convert.json,
    a record of what was converted.
    """
    from defectlab.runs.tables import format_table
    from defectlab.workflows.convert import RECORD, convert_dataset

    folder = convert_dataset(dataset_argument(dataset, overrides), to, out, overwrite=overwrite)
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    if as_json:
        echo_json(record)
        return
    rows = [(split, counts["images"], counts["boxes"]) for split, counts in record["splits"].items()]
    click.echo(format_table(["split", "images", "boxes"], rows))
    click.echo(f"\nclasses: {', '.join(record['classes'])}")
    if record["unreadable"]:
        click.echo(f"left out {len(record['unreadable'])} unreadable image(s); see {folder / RECORD}")
    click.echo(f"written as {to}: {folder}")


def dataset_argument(text: str, overrides: tuple[str, ...] = ()) -> Any:
    """DATASET as typed: a path or ``NAME[:VALUE]`` (a string), or an inline TOML table (a spec);
    ``KEY=VALUE`` overrides make a spec of a name."""
    from defectlab.plugin_system.config import parse_override

    spec: Any = text
    if text.lstrip().startswith("{"):
        try:
            spec = tomllib.loads(f"dataset = {text}")["dataset"]
        except tomllib.TOMLDecodeError as exc:
            raise click.BadParameter(f"not a TOML inline table: {exc}", param_hint="DATASET") from exc
    if overrides:
        if isinstance(spec, str) and Path(spec).exists():
            raise click.BadParameter(f"--set needs DATASET by name; for the path '{text}' write a spec such as "
                                     f"'{{name = \"coco\", root = \"{text}\", ...}}'", param_hint="--set")
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        for keys, value in map(parse_override, overrides):
            spec[".".join(keys)] = value
    return spec


COMMANDS = [convert_command]
