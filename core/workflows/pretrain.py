"""Self-supervised pretraining of an encoder on unlabelled images: ``defectlab pretrain`` and ``dl.pretrain``.

A pretraining config is a training config with an ``[ssl]`` objective instead of a loss and
evaluators; it runs through the same engine as ``train`` (checkpoints, resume, AMP, torchrun, the
non-finite stop) and leaves ``encoder.pt`` in its run directory for ``train --init-from``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import ConfigError


def pretrain(config: str | Path | Mapping[str, Any] | None = None, *, out: str | Path | None = None,
             overrides: Sequence[str] = (), resume: str | Path | None = None, callbacks: Sequence[Any] = (),
             overwrite: bool = False) -> Any:
    """Pretrain the ``[model]`` encoder with the ``[ssl]`` objective on the ``[data]`` images (labels ignored).

    Returns the finished :class:`~defectlab.Run`; its folder holds ``encoder.pt`` (the encoder alone,
    with the best weights). ``out`` defaults to runs/pretrain-<time>; ``resume`` continues a killed
    pretraining to the same weights.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml
    from defectlab.runs.run import new_run_dir, removed_if_unstarted
    from defectlab.training.distributed import one_folder, world_from_environment
    from defectlab.workflows.train import train

    if resume is not None:
        return train(resume=resume, overrides=overrides, callbacks=callbacks)
    if config is None:
        raise ConfigError(["give a pretraining config (a TOML file or a dict), or resume=RUN"], "pretrain")
    source = str(config) if isinstance(config, (str, Path)) else "config"
    values = load_toml(config) if isinstance(config, (str, Path)) else copy.deepcopy(dict(config))
    values = apply_overrides(values, list(overrides))
    problems = [f"{key}: a pretraining has no {key} (it learns from images alone); remove the section"
                for key in ("loss", "evaluators", "stages") if key in values]
    if "ssl" not in values:
        problems.append("ssl: required: the self-supervised objective, e.g. [ssl] name = \"dino\" "
                        "(`defectlab list ssl`)")
    if problems:
        raise ConfigError(problems, source)
    one_folder(world_from_environment(), out)
    made = out is None and world_from_environment().is_main
    if made:
        out = new_run_dir("pretrain")
    with removed_if_unstarted(Path(out), made) if made else nullcontext():
        return train(values, out=out, callbacks=callbacks, overwrite=overwrite)
