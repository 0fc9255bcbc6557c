"""defectlab: a plugin-based platform for industrial defect inspection.

Every method is a plugin component of a kind (distance, imbalance, backbone, ssl, loss,
evaluator, dataset, callback), found through the ``defectlab`` entry-point group and built by name.
This module is the public API: every name in ``__all__`` is documented in docs/api.md, and
nothing else is. The names whose modules import torch are imported on first use.
"""

from importlib import import_module as _import_module

from defectlab.data.datasets import (
    IMAGE_SUFFIXES,
    Box,
    DefectDataset,
    Sample,
    UnreadableImageError,
    image_files,
    open_dataset,
    open_image,
    read_image,
)
from defectlab.data.drawing import draw_boxes
from defectlab.data.splits import (
    SPLIT_NAMES,
    canonical_split,
    label_fraction_subset,
    stratified_split,
)
from defectlab.data.subsets import balancing_plan, source_subset, write_subset_csv
from defectlab.plugin_system.components import (
    create,
    describe,
    get_component,
    list_components,
    plugins,
)
from defectlab.plugin_system.errors import (
    ConfigError,
    DataError,
    DefectlabError,
    ParameterError,
    PluginError,
    TrainingError,
    UnknownComponentError,
    WriteError,
    did_you_mean,
)
from defectlab.plugin_system.files import atomic_write, write_json, write_text
from defectlab.plugin_system.hookspecs import hookimpl
from defectlab.plugin_system.naming import first_few, natural_key
from defectlab.plugin_system.parameters import Range
from defectlab.plugin_system.plotting import pyplot, save_figure
from defectlab.plugin_system.protocols import (
    Backbone,
    Callback,
    DistanceMetric,
    Evaluator,
    ImbalanceMetric,
    Loss,
    SSLObjective,
)
from defectlab.plugin_system.version import VERSION as __version__
from defectlab.runs.run import Run
from defectlab.runs.tables import format_table
from defectlab.training.weights import (
    WeightReport,
    downloading_weights,
    hub_offline,
    load_matching,
    read_state_dict,
    resolve_weights,
)
from defectlab.workflows.convert import convert_dataset
from defectlab.workflows.report import compare_runs
from defectlab.workflows.screen import (
    ScreeningResult,
    discrepancy_score,
    screen,
    select_source,
)
from defectlab.workflows.tune_oii import OIITuning, tune_oii

_LAZY = {  # public names whose modules import torch, click or onnxruntime
    "DataModule": "defectlab.data.data_module",
    "ImageTransform": "defectlab.data.transforms",
    "tile": "defectlab.data.tiling",
    "untile": "defectlab.data.tiling",
    "Trainer": "defectlab.training.loop",
    "TrainSettings": "defectlab.training.settings",
    "freeze_backbone": "defectlab.training.transfer",
    "init_backbone_from": "defectlab.training.transfer",
    "train": "defectlab.workflows.train",
    "pretrain": "defectlab.workflows.pretrain",
    "sweep": "defectlab.workflows.sweep",
    "tune": "defectlab.workflows.tune",
    "evaluate_run": "defectlab.workflows.evaluate",
    "load_trained": "defectlab.workflows.predict",
    "predict": "defectlab.workflows.predict",
    "export": "defectlab.workflows.export",
    "check_parity": "defectlab.workflows.parity",
    "load_exported": "defectlab.runtime.exported",
    "ExportedModel": "defectlab.runtime.exported",
    "cli_group": "defectlab.cli.main",
    "vision_transformer": "defectlab.training.objective",
}

__all__ = [
    "__version__",
    # finding and building components (DESIGN.md)
    "hookimpl", "list_components", "describe", "create", "get_component", "plugins", "cli_group",
    # what a plugin author declares against
    "Range", "Backbone", "DistanceMetric", "Evaluator", "ImbalanceMetric", "Loss", "SSLObjective",
    "DefectDataset", "Sample", "Box", "IMAGE_SUFFIXES", "SPLIT_NAMES",
    # errors
    "DefectlabError", "ConfigError", "DataError", "ParameterError", "PluginError", "TrainingError",
    "UnknownComponentError", "UnreadableImageError", "WriteError", "did_you_mean",
    # helpers a plugin shares with the core
    "atomic_write", "write_text", "write_json", "pyplot", "save_figure", "format_table", "first_few", "natural_key",
    "image_files", "read_image", "open_image", "open_dataset", "canonical_split", "convert_dataset",
    "WeightReport", "read_state_dict", "load_matching", "resolve_weights", "downloading_weights", "hub_offline",
    "vision_transformer", "draw_boxes",
    # data
    "DataModule", "ImageTransform", "stratified_split", "label_fraction_subset", "tile", "untile",
    # screening
    "screen", "ScreeningResult", "discrepancy_score", "select_source", "source_subset", "balancing_plan",
    "write_subset_csv",
    # training and using runs
    "train", "pretrain", "Trainer", "Callback", "TrainSettings", "Run", "freeze_backbone", "init_backbone_from",
    "evaluate_run", "load_trained", "predict", "compare_runs", "sweep", "tune", "tune_oii", "OIITuning",
    # deployment
    "export", "check_parity", "load_exported", "ExportedModel",
]


def __getattr__(name: str) -> object:
    """The names whose modules import torch, imported on first use so ``import defectlab`` stays light."""
    if name in _LAZY:
        if name == "cli_group":
            return _import_module(_LAZY[name]).cli
        return getattr(_import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defectlab' has no attribute {name!r}")
