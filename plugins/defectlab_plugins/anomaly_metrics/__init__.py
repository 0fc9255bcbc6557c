"""Entry point of the ``anomaly`` evaluator: image AUROC, AUROC per defect class, best F1, pixel AUROC and PRO.

The evaluator needs scikit-learn and SciPy when it scores and matplotlib when it draws, so it
is imported only when the registry asks for it: importing this module (as every ``defectlab``
command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_evaluators():
    from defectlab_plugins.anomaly_metrics.evaluator import AnomalyEvaluator

    return [AnomalyEvaluator]
