"""Experiment trackers as training callbacks: TensorBoard and MLflow (the optional extras
``defectlab[tensorboard]`` and ``defectlab[mlflow]``), and ``defectlab mlflow-log``."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_callbacks():
    from defectlab_plugins.trackers.mlflow import MLflow
    from defectlab_plugins.trackers.tensorboard import TensorBoard

    return [TensorBoard, MLflow]


@hookimpl
def register_commands(cli):
    import click

    @cli.command("mlflow-log")
    @click.argument("run", type=click.Path(exists=True, file_okay=False))
    def mlflow_log(run: str) -> None:
        """Log RUN's files, the models exported after its training too, to the MLflow run its training logged to
        (the one RUN/mlflow.json names)."""
        from pathlib import Path

        from defectlab_plugins.trackers.mlflow import log_run_files

        record, names = log_run_files(Path(run))
        click.echo(f"logged {', '.join(names)} to MLflow run {record['run_id']} at {record['tracking_uri']}")
