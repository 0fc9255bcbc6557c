"""Options that several commands share, declared once."""

from __future__ import annotations

from typing import Any, Callable

import click
from defectlab.training.tta import MODES


def inference_options(default_note: str = "") -> Callable[[Any], Any]:
    """``--tta`` and ``--logit-adjustment`` for a command that predicts with a run's model.

    ``default_note`` ends both defaults' help, e.g. "; an exported file's own".
    """
    tta = click.option("--tta", type=click.Choice(MODES),
                       help=f"Test-time augmentation (default: the run's train.tta{default_note}).")
    adjustment = click.option(
        "--logit-adjustment", "logit_adjustment", type=click.FloatRange(0), metavar="TAU",
        help="Classifiers: predict with the logits minus TAU·log(training class shares) (default: the run's "
             f"train.logit_adjustment{default_note}).")
    return lambda command: tta(adjustment(command))
