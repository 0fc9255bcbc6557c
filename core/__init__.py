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
    UnknownComponentError,
    did_you_mean,
)
from defectlab.hookspecs import hookimpl
from defectlab.screening import ScreeningResult, discrepancy_score, screen, select_source
from defectlab.subsets import balancing_plan, source_subset, write_subset_csv
from defectlab.tiling import augment_pair, tile, untile

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
]
