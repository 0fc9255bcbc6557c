"""defectlab: a plugin-based platform for industrial defect inspection.

Every method is a plugin component of a kind (distance, imbalance, backbone, ssl, loss,
evaluator, dataset), found through the ``defectlab`` entry-point group and built by name.
"""

from importlib import metadata as _metadata

from defectlab.plugin_system.components import create, describe, get_component, list_components, plugins
from defectlab.data.datasets import IMAGE_SUFFIXES, Box, DefectDataset, Sample, UnreadableImageError, open_dataset, read_image
from defectlab.plugin_system.errors import (
    ConfigError,
    DataError,
    DefectlabError,
    ParameterError,
    PluginError,
    TrainingError,
    UnknownComponentError,
    did_you_mean,
)
from defectlab.plugin_system.hookspecs import hookimpl
from defectlab.workflows.tune_oii import OIITuning, tune_oii
from defectlab.workflows.screen import ScreeningResult, discrepancy_score, screen, select_source
from defectlab.data.splits import label_fraction_subset, stratified_split
from defectlab.data.subsets import balancing_plan, source_subset, write_subset_csv
from defectlab.runs.run import Run
from defectlab.data.tiling import augment_pair, tile, untile
from defectlab.training.transfer import freeze_backbone, init_backbone_from
from defectlab.training.weights import WeightReport, load_matching, read_state_dict

_LAZY = {  # names whose modules import torch
    "DataModule": "defectlab.data.data_module", "ImageTransform": "defectlab.data.transforms",
    "Trainer": "defectlab.training.loop", "TrainSettings": "defectlab.training.settings", "train": "defectlab.workflows.train",
    "evaluate_run": "defectlab.workflows.predict", "load_trained": "defectlab.workflows.predict", "predict": "defectlab.workflows.predict",
}

try:
    __version__ = _metadata.version("defectlab")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "IMAGE_SUFFIXES",
    "Box",
    "DefectDataset",
    "Sample",
    "UnreadableImageError",
    "ScreeningResult",
    "balancing_plan",
    "discrepancy_score",
    "get_component",
    "screen",
    "select_source",
    "source_subset",
    "write_subset_csv",
    "open_dataset",
    "read_image",
    "ConfigError",
    "DataError",
    "DefectlabError",
    "ParameterError",
    "PluginError",
    "UnknownComponentError",
    "__version__",
    "augment_pair", "tile", "untile",
    "create",
    "describe",
    "did_you_mean",
    "hookimpl",
    "list_components",
    "plugins",
    "DataModule", "ImageTransform", "label_fraction_subset", "stratified_split",
    "Run", "TrainSettings", "Trainer", "TrainingError", "WeightReport", "evaluate_run", "freeze_backbone",
    "init_backbone_from", "load_matching", "load_trained", "predict", "read_state_dict", "train",
    "OIITuning", "tune_oii",
]


def __getattr__(name: str) -> object:
    """The names whose modules import torch, imported on first use so ``import defectlab`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defectlab' has no attribute {name!r}")
