"""Entry point of the classification evaluators: ``classification`` (SPEC 002 §5.1, SPEC 000 §3.2) and ``embeddings``.

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
