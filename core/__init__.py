"""defectlab: a plugin-based platform for industrial defect inspection.

Every method is a plugin component of a kind (distance, imbalance, backbone, ssl, loss,
evaluator, dataset), found through the ``defectlab`` entry-point group and built by name.
"""

from importlib import metadata as _metadata

from defectlab.api import create, describe, get_component, list_components, plugins
from defectlab.datasets import IMAGE_SUFFIXES, Box, DefectDataset, Sample, UnreadableImageError, open_dataset, read_image
from defectlab.errors import (
    ConfigError,
    DataError,
    DefectlabError,
    ParameterError,
    PluginError,
    TrainingError,
    UnknownComponentError,
    did_you_mean,
)
from defectlab.hookspecs import hookimpl
from defectlab.oii_tuning import OIITuning, tune_oii
from defectlab.screening import ScreeningResult, discrepancy_score, screen, select_source
from defectlab.splits import label_fraction_subset, stratified_split
from defectlab.subsets import balancing_plan, source_subset, write_subset_csv
from defectlab.runs import Run
from defectlab.tiling import augment_pair, tile, untile
from defectlab.transfer import freeze_backbone, init_backbone_from
from defectlab.weights import WeightReport, load_matching, read_state_dict

_LAZY = {  # names whose modules import torch
    "DataModule": "defectlab.data_module", "ImageTransform": "defectlab.transforms",
    "Trainer": "defectlab.engine", "TrainSettings": "defectlab.train_settings", "train": "defectlab.training",
    "evaluate_run": "defectlab.prediction", "load_trained": "defectlab.prediction", "predict": "defectlab.prediction",
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
