"""Synthetic NEU-DET-style steel surfaces with six kinds of defects and their boxes (no download)."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_datasets():
    from defectlab_plugins.synthetic_defects.dataset import SyntheticDefects

    return [SyntheticDefects]
