"""Dataset distances on colour signatures: the Earth Mover's Distance (SPEC 000) and Sinkhorn.

This is the entry-point module: it imports nothing heavy, and the implementation
(``signature_distances``, ``color_signatures``) is imported only when the components are
collected, so loading the plugin costs nothing at ``defectlab --help``.
"""

from __future__ import annotations

from typing import Any

from defectlab import hookimpl


@hookimpl
def register_distance_metrics() -> list[Any]:
    from defectlab_plugins.signature_distances import EMD, Sinkhorn

    return [EMD, Sinkhorn]
