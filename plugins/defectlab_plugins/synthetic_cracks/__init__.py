"""Synthetic electroluminescence images of PV cells with thin, faint cracks and their masks (no download)."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_datasets():
    from defectlab_plugins.synthetic_cracks.dataset import SyntheticCracks

    return [SyntheticCracks]
