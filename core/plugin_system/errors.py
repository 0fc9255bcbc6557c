"""Errors a user can act on. The CLI prints them in one line and exits 1, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DefectlabError(Exception):
    """Base of every error caused by input the user can correct."""


class UnknownComponentError(DefectlabError, KeyError):
    """A kind or component name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParameterError(DefectlabError, ValueError):
    """A parameter that does not exist, is missing, or has the wrong type."""


class DataError(DefectlabError, ValueError):
    """Input data that cannot be used as it is: empty, unreadable, negative counts, wrong shapes."""


class ConfigError(DefectlabError):
    """One or more problems in a config; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))


class PluginError(DefectlabError):
    """A plugin that is broken or conflicts with another one."""


class WriteError(DefectlabError):
    """A file that could not be written (read-only folder, permission denied, full disk): the environment, not a bug."""


class TrainingError(DefectlabError):
    """A training that stopped before its end (non-finite loss, interruption); the run can be resumed."""


def error_text(exc: BaseException) -> str:
    """An error as one line for a user: a DefectlabError's message, anything else with its type in front."""
    return str(exc) if isinstance(exc, DefectlabError) else f"{type(exc).__name__}: {exc}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A '; did you mean ...?' suffix naming the close matches of ``word``, or ''."""
    matches = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not matches:
        return ""
    best = difflib.SequenceMatcher(None, word, matches[0]).ratio()
    matches = [m for m in matches if difflib.SequenceMatcher(None, word, m).ratio() >= best - 0.1]
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


#: Top-level modules of the [train] extra, which the base (runtime) install lacks.
TRAINING_STACK = {"torch", "torchvision", "timm", "segmentation_models_pytorch", "torchmetrics", "scipy", "sklearn",
                  "matplotlib", "ot", "pycocotools", "elpv_dataset", "tqdm", "yaml", "onnx", "onnxscript"}


def missing_training_stack(exc: BaseException) -> str | None:
    """What to install, when ``exc`` is the import of a training-stack module this install lacks; else None."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TRAINING_STACK:
        return (f"needs {exc.name}, which this install lacks (the base install only predicts with exported .onnx "
                f"files): pip install 'defectlab[train]'")
    return None
