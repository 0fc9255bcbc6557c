"""What the engine checks of the components it calls, at their first use, so that a component that
breaks its contract is named in one line (which plugin, which rule) instead of failing deep inside
the engine after work is lost. The contracts themselves are in docs/kinds/*.md."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from defectlab.plugin_system.components import list_components
from defectlab.plugin_system.errors import PluginError
from defectlab.plugin_system.registry import Component


def registered(kind: str, obj: Any) -> Component | None:
    """The registered component of ``kind`` whose class built ``obj`` (or is ``obj``); None for any other object."""
    cls = obj if isinstance(obj, type) else type(obj)
    for component in list_components(kind):
        if component.obj is cls or getattr(component.obj, "__qualname__", None) == cls.__qualname__ and \
                getattr(component.obj, "__module__", None) == cls.__module__:
            return component
    return None


def component_label(kind: str, obj: Any) -> str:
    """``loss 'dibe' of plugin 'segmentation_losses'`` for a built component (its class looked up in the registry)."""
    component = registered(kind, obj)
    if component is not None:
        return f"{kind} '{component.name}' of plugin '{component.plugin}'"
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{kind} {cls.__module__}.{cls.__qualname__}"


def broken(kind: str, obj: Any, rule: str) -> PluginError:
    """The one-line error for a component that broke ``rule`` of its kind's contract."""
    return PluginError(f"{component_label(kind, obj)} breaks its contract: {rule} (see docs/kinds/{kind}.md); "
                       f"report it to the plugin's authors")


def checked_logits(model: Any, output: Any) -> torch.Tensor:
    """The model's output if it is one tensor, as the engine needs; else a PluginError naming the backbone."""
    if not isinstance(output, torch.Tensor):
        raise broken("backbone", getattr(model, "module", model),
                     f"forward() must return one tensor of logits, but returned a {type(output).__name__}")
    return output


def checked_loss(loss: Any, value: Any) -> torch.Tensor:
    """The loss value if it is a one-element tensor; else a PluginError naming the loss."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise broken("loss", loss, f"forward(pred, target) must return a scalar tensor, but returned {shape} "
                                   f"(a reduction of 'none'?)")
    return value.reshape(())


def checked_scores(evaluator: Any, scores: Any) -> dict[str, float]:
    """An evaluator's ``compute()`` as a dict of names to floats; anything else is a PluginError."""
    if not isinstance(scores, dict):
        raise broken("evaluator", evaluator, f"compute() must return a dict of score names to numbers, but "
                                             f"returned a {type(scores).__name__}")
    result = {}
    for name, value in scores.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise broken("evaluator", evaluator, f"compute() must return a dict of score names to numbers, but "
                                                 f"{name!r} is a {type(value).__name__}")
        result[name] = float(value)
    return result


def checked_losses(model: Any, value: Any) -> dict[str, torch.Tensor]:
    """A detector's training output, a dict of named scalar losses (torchvision's convention); else a PluginError."""
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.numel() == 1 for k, v in value.items()):
        raise broken("backbone", getattr(model, "module", model),
                     f"a detector's forward(images, targets) must return a dict of named scalar losses in training "
                     f"mode, but returned {type(value).__name__}")
    return {name: loss.reshape(()) for name, loss in value.items()}


def checked_detections(model: Any, value: Any, images: int) -> list[dict[str, torch.Tensor]]:
    """A detector's eval output, one dict of boxes, scores and labels per image; else a PluginError."""
    if not isinstance(value, (list, tuple)) or len(value) != images or not all(
            isinstance(d, dict) and {"boxes", "scores", "labels"} <= set(d) for d in value):
        raise broken("backbone", getattr(model, "module", model),
                     f"a detector's forward(images) must return, in eval mode, a list of {images} dicts with boxes, "
                     f"scores and labels, but returned {type(value).__name__}")
    return list(value)


def checked_anomaly(model: Any, value: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """An anomaly model's output, {"scores": (N,), "maps": (N, H, W)} at the input's size; else a PluginError."""
    count, size = len(images), tuple(images.shape[-2:])
    scores, maps = (value.get("scores"), value.get("maps")) if isinstance(value, dict) else (None, None)
    if not (isinstance(scores, torch.Tensor) and tuple(scores.shape) == (count,) and isinstance(maps, torch.Tensor)
            and tuple(maps.shape) == (count, *size)):
        got = {k: tuple(v.shape) for k, v in value.items() if isinstance(v, torch.Tensor)} \
            if isinstance(value, dict) else type(value).__name__
        raise broken("backbone", getattr(model, "module", model),
                     f"an anomaly model's forward(images) must return {{'scores': ({count},), 'maps': "
                     f"({count}, {size[0]}, {size[1]})}}, but returned {got}")
    return {"scores": scores.float(), "maps": maps.float()}
