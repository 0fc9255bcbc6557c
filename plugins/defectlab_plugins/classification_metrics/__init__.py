"""Entry point of the classification evaluators: ``classification`` (Hemmingsson and Olsson 2026 §5.1, Valle Salgado et al. 2023 §3.2) and ``embeddings``.

The evaluators need torch (and, when they score, torchmetrics and scikit-learn), so they are
imported only when the registry asks for them: importing this module (as every ``defectlab``
command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_evaluators():
    from defectlab_plugins.classification_metrics.classification import ClassificationEvaluator
    from defectlab_plugins.classification_metrics.embeddings import EmbeddingsEvaluator

    return [ClassificationEvaluator, EmbeddingsEvaluator]
