"""Input imbalance of a class distribution: the Gini coefficient (Valle Salgado et al. 2023 eq. 16-20) and the imbalance ratio."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_imbalance_metrics():
    from defectlab_plugins.class_imbalance.metrics import Gini, ImbalanceRatio

    return [Gini, ImbalanceRatio]
