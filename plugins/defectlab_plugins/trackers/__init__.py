"""Experiment trackers as training callbacks: TensorBoard (the optional extra ``defectlab[tensorboard]``)."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_callbacks():
    from defectlab_plugins.trackers.tensorboard import TensorBoard

    return [TensorBoard]
