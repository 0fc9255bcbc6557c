"""Dataset distances on colour signatures: the Earth Mover's Distance (Valle Salgado et al. 2023) and Sinkhorn.

The implementation (``distances``, ``signatures``) needs numpy, and SciPy and POT when it
measures, so it is imported only when the components are collected: loading the plugin costs
nothing at ``defectlab --help``.
"""

from __future__ import annotations

from typing import Any

from defectlab import hookimpl


@hookimpl
def register_distance_metrics() -> list[Any]:
    from defectlab_plugins.emd.distances import EMD, Sinkhorn

    return [EMD, Sinkhorn]
