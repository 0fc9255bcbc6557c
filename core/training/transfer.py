"""Transfer learning: which tensors are a model's backbone, loading them from another run, linear probing.

Valle Salgado et al. 2023 §8: train on a source, then carry the backbone's weights only to the target model and
initialise the rest (the head) at random. A classifier's backbone is every tensor outside its
``head``; a segmentation model's is its ``encoder``; a model may also name its backbone's
state-dict prefixes itself (``backbone_prefixes``); a model with none of these transfers whatever fits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from defectlab.plugin_system.errors import DataError
from defectlab.training.checkpoints import ENCODER_FILE, checkpoint_path
from defectlab.training.weights import WeightReport, load_matching, read_state_dict

if TYPE_CHECKING:
    from torch import nn

#: Where a pretraining checkpoint keeps the student's encoder (ObjectiveModel.objective.encoder), for
#: ``--init-from`` on a pretraining stopped before it wrote encoder.pt.
PRETRAINED_ENCODER = "objective.encoder."


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the task-specific part that transfer leaves at its initial values."""
    if hasattr(model, "head"):
        return ("head.",)
    if hasattr(model, "encoder"):  # segmentation: everything after the encoder is task specific
        return tuple(f"{name}." for name, _ in model.named_children() if name != "encoder")
    return ()


def is_backbone(model: nn.Module, name: str) -> bool:
    """Whether state-dict entry ``name`` belongs to the model's backbone: one under the model's own
    ``backbone_prefixes`` when it names them (yolov5: ``model.model.0.`` to ``model.model.9.``), else
    any entry outside its head."""
    own = getattr(model, "backbone_prefixes", None)
    if own is not None:
        return name.startswith(tuple(own))
    return not name.startswith(head_prefixes(model))


def init_backbone_from(model: nn.Module, run_or_file: str | Path) -> WeightReport:
    """Load the backbone tensors of another run or weights file into ``model``; the head stays as it is.

    Tensors of the source's head (or any other non-backbone entry) are never loaded, even when
    their shapes would fit: the report lists them as unused. A pretraining run that stopped before
    writing encoder.pt (killed, or stopped by hand once its objective collapsed) gives the student
    encoder of its best.pt, as encoder.pt would have.
    """
    path = Path(run_or_file).expanduser()
    file = path / ENCODER_FILE if (path / ENCODER_FILE).is_file() else checkpoint_path(path)
    state = read_state_dict(file)
    if any(key.startswith(PRETRAINED_ENCODER) for key in state):
        state = {key.removeprefix(PRETRAINED_ENCODER): value for key, value in state.items()
                 if key.startswith(PRETRAINED_ENCODER)}
    backbone = {k: v for k, v in state.items() if is_backbone(model, k)}
    if not backbone:
        raise DataError(f"--init-from '{file}': it holds no tensor of this model's backbone (names like "
                        f"{', '.join(list(state)[:3])})")
    report = load_matching(model, backbone, str(file))
    report.unused += [k for k in state if k not in backbone]
    return report


def freeze_backbone(model: nn.Module) -> list[str]:
    """Linear probing: stop training every parameter outside the head; returns the frozen names.

    A model with its own ``freeze`` method (the classifiers) freezes through it, so its frozen
    BatchNorm layers also keep their statistics.
    """
    if not head_prefixes(model) and getattr(model, "backbone_prefixes", None) is None:
        raise DataError(f"linear probing needs a model with a head; {type(model).__name__} has neither 'head' "
                        f"nor 'encoder'")
    if hasattr(model, "freeze") and hasattr(model, "head"):
        return list(model.freeze("all_but_head"))
    frozen = []
    for name, parameter in model.named_parameters():
        if is_backbone(model, name):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def frozen_norms_to_eval(model: nn.Module) -> None:
    """Put normalisation layers whose parameters are all frozen in eval mode, so their statistics stay too.

    Called after every ``model.train()``: a frozen backbone must not drift through BatchNorm's
    running mean and variance.
    """
    from torch import nn

    for module in model.modules():
        parameters = list(module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._NormBase) and parameters and not any(
                p.requires_grad for p in parameters):
            module.eval()
