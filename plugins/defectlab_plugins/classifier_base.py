"""What every classification backbone shares: the head, weight loading, freezing, backbone/head split.

A classifier is an ``nn.Module`` whose ``forward_features(x)`` gives a pooled embedding (N, D) and
whose submodule ``head`` maps it to logits (N, num_classes). Everything but ``head`` is the
backbone: ``backbone_state_dict()`` is what transfer learning carries from one task to the next.

Weights come from nowhere (random init), a local state-dict file, or ``"imagenet"`` (downloaded
through timm, never when ``HF_HUB_OFFLINE=1``). Tensors whose shapes do not fit are skipped and
reported, not fatal, so a checkpoint with another head or input size still transfers what fits.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from defectlab import DataError, ParameterError, WeightReport, did_you_mean, load_matching, read_state_dict

log = logging.getLogger("defectlab.backbones")

IMAGENET = "imagenet"
ALL_BUT_HEAD = "all_but_head"
HEAD = "head"
OFFLINE_VALUES = {"1", "true", "yes", "on"}

COMMON_ARGS = """\
    num_classes: number of output logits (the head's size).
    in_chans: number of input image channels (1 for grey images).
    weights: None for random initialisation, a local .pt/.pth/.safetensors state dict (tensors
        whose names or shapes do not fit are skipped and reported), or "imagenet" for the
        pretrained weights, which needs the network (never tried when HF_HUB_OFFLINE=1).
    freeze: parameter-name prefixes whose parameters are not trained, e.g. conv1, bn1, layer1,
        layer2; "all_but_head" freezes everything but the head (linear probing). Frozen
        BatchNorm layers also keep their running statistics.
    head_dropout: dropout probability before the head's last linear layer.
    head_hidden: if set, the head is Linear-BatchNorm-ReLU-Dropout-Linear with this hidden width.
"""


def with_common_args(init: Callable[..., None]) -> Callable[..., None]:
    """Append the documentation of the shared parameters to a constructor's ``Args:`` section."""
    init.__doc__ = inspect.cleandoc(init.__doc__ or "Args:") + "\n" + COMMON_ARGS
    return init


def check_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    """ParameterError unless low <= value <= high (value < high with ``high_open``)."""
    if not (low <= value < high if high_open else low <= value <= high):
        interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ParameterError(f"{name} must be in {interval}, got {value!r}")


def check_common(num_classes: int, in_chans: int, head_dropout: float, head_hidden: int | None) -> None:
    """ParameterError for impossible values of the parameters every classifier takes."""
    check_range("num_classes", num_classes, 1, math.inf)
    check_range("in_chans", in_chans, 1, math.inf)
    check_range("head_dropout", head_dropout, 0.0, 1.0, high_open=True)
    if head_hidden is not None:
        check_range("head_hidden", head_hidden, 1, math.inf)


def check_names(parameter: str, names: str | Sequence[str], allowed: Sequence[str]) -> None:
    """ParameterError naming the choices when one of ``names`` (or ``names`` itself) is not in ``allowed``."""
    for name in [names] if isinstance(names, str) else names:
        if name not in allowed:
            raise ParameterError(f"{parameter}: unknown name {name!r}{did_you_mean(name, allowed)} "
                                 f"(choices: {', '.join(allowed)})")


class ClassifierHead(nn.Sequential):
    """Logits from an embedding: Dropout-Linear, or Linear-BatchNorm-ReLU-Dropout-Linear with a hidden layer.

    The last linear layer is always ``fc``, so a head's state-dict names do not depend on its options.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_features
        if hidden is not None:
            layers["hidden"] = nn.Linear(in_features, hidden)
            layers["norm"] = nn.BatchNorm1d(hidden)
            layers["act"] = nn.ReLU(inplace=True)
            width = hidden
        layers["drop"] = nn.Dropout(dropout)
        layers["fc"] = nn.Linear(width, num_classes)
        super().__init__(layers)


def offline() -> bool:
    """Whether the user asked for no network (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def imagenet_state_dict(timm_name: str, **timm_kwargs: Any) -> dict[str, Tensor]:
    """The pretrained weights timm provides for ``timm_name`` (a download on first use).

    Raises DataError, saying how to pass a local file instead, when HF_HUB_OFFLINE=1 is set
    (no download is attempted) or when the download fails.
    """
    advice = (f"download them once where the network is available, e.g. `torch.save(timm.create_model("
              f"'{timm_name}', pretrained=True).state_dict(), '{timm_name.split('.')[0]}.pt')`, and pass "
              f"weights='/path/to/{timm_name.split('.')[0]}.pt' (a local .pt/.pth/.safetensors file)")
    if offline():
        raise DataError(f"weights='imagenet' needs a download but HF_HUB_OFFLINE=1 is set; {advice}")
    import timm

    try:
        model = timm.create_model(timm_name, pretrained=True, num_classes=0, **timm_kwargs)
    except Exception as exc:  # network, hub or cache errors all mean the same to the user
        raise DataError(f"could not download the imagenet weights of {timm_name} ({exc}); {advice}") from exc
    return model.state_dict()


def variant(base: type, class_name: str, name: str, doc: str, **attributes: Any) -> type:
    """A subclass of ``base`` registered as ``name``: one architecture of a family sharing a constructor."""
    namespace = {"name": name, "__doc__": doc, "__module__": base.__module__, "__qualname__": class_name}
    return type(class_name, (base,), {**namespace, **attributes})


def under_prefix(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` lies under ``prefix`` (``all_but_head``: anywhere outside the head)."""
    if prefix == ALL_BUT_HEAD:
        return not name.startswith(HEAD + ".")
    return name == prefix or name.startswith(prefix + ".")


class ClassifierBase(nn.Module):
    """Base of the classification backbones: ``forward_features`` -> embedding, ``head`` -> logits."""

    tasks = ("classify", "embed")
    #: Prefix under which a bare (unwrapped) checkpoint's names are found in this model.
    native_prefix = ""

    head: nn.Module
    weights_report: WeightReport | None = None

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled embedding (N, D) that the head classifies."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.forward_features(x))

    @property
    def backbone_prefixes(self) -> tuple[str, ...]:
        """Top-level names of the backbone's tensors (every state-dict entry but the head's), in order."""
        names = dict.fromkeys(key.split(".", 1)[0] for key in self.state_dict())
        return tuple(name for name in names if name != HEAD)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the head: what transfer learning loads into the next model."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(HEAD + ".")}

    def setup_weights_and_freezing(self, weights: str | None, freeze: Sequence[str],
                                   imagenet: Callable[[], dict[str, Tensor]]) -> None:
        """Load ``weights`` (None, a file, or "imagenet" through ``imagenet()``), then freeze ``freeze``."""
        if weights is not None:
            if weights == IMAGENET:
                state, source = imagenet(), "imagenet"
            elif not (file := Path(weights).expanduser()).is_file():
                raise DataError(f"weights: {str(file)!r} is neither 'imagenet' nor an existing file")
            else:
                state, source = read_state_dict(weights), str(weights)
            self.weights_report = load_matching(self, state, source, prefixes=(self.native_prefix,))
            report = self.weights_report
            # a fresh head is expected; a backbone tensor that did not fit is worth a warning
            backbone_misfits = [n for n in [*report.skipped, *report.missing] if not n.startswith(HEAD + ".")]
            (log.warning if backbone_misfits else log.info)(report.summary())
        self.freeze(freeze)

    def freeze(self, prefixes: str | Sequence[str]) -> list[str]:
        """Stop training the parameters under ``prefixes`` ("all_but_head" = every parameter outside the head).

        A prefix names a module or parameter (``layer1``, ``layer1.0.conv1``, ``conv1.weight``).
        Returns the names of the parameters frozen; an unknown prefix is a ParameterError.
        """
        prefixes = [prefixes] if isinstance(prefixes, str) else prefixes
        frozen: dict[str, None] = {}
        for prefix in prefixes:
            hits = [(n, p) for n, p in self.named_parameters() if under_prefix(n, prefix)]
            if not hits:
                choices = [*self.backbone_prefixes, HEAD, ALL_BUT_HEAD]
                raise ParameterError(f"freeze: {prefix!r} names no parameter{did_you_mean(prefix, choices)} "
                                     f"(top-level names: {', '.join(choices)})")
            for name, parameter in hits:
                parameter.requires_grad_(False)
                frozen[name] = None
        self.train(self.training)
        return list(frozen)

    def train(self, mode: bool = True) -> ClassifierBase:
        """Set training mode, keeping BatchNorm layers whose parameters are all frozen in eval mode."""
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters(recurse=False))
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and params and not any(
                        p.requires_grad for p in params):
                    module.eval()
        return self
