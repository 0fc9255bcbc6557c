"""Entry point of DINO, the self-distillation objective of Hemmingsson and Olsson 2026 (seed 002 §2.5).

The objective needs torch, so it is imported only when the registry asks for it: importing this
module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_ssl_objectives():
    from defectlab_plugins.dino.objective import DINO

    return [DINO]
