"""What every classification backbone shares: weight loading, freezing, the backbone/head split.

A classifier is an ``nn.Module`` whose ``forward_features(x)`` gives a pooled embedding (N, D) and
whose submodule ``head`` maps it to logits (N, num_classes). Everything but ``head`` is the
backbone: ``backbone_state_dict()`` is what transfer learning carries from one task to the next.

Weights come from nowhere (random init), a local state-dict file, or ``"imagenet"`` (downloaded
through timm; offline or without the network only from the Hugging Face cache). Tensors whose
shapes do not fit are skipped and reported, not fatal, so a checkpoint with another head or input
size still transfers what fits.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from torch import nn

from defectlab import (
    ParameterError,
    Range,
    WeightReport,
    did_you_mean,
    downloading_weights,
    load_matching,
    read_state_dict,
    resolve_weights,
)

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger("defectlab.backbones")

ALL_BUT_HEAD = "all_but_head"
HEAD = "head"

# The bounds of the parameters every classifier takes, checked by the registry before one is built.
Count = Annotated[int, Range(1)]  # num_classes, in_chans
HiddenWidth = Annotated[int | None, Range(1)]  # head_hidden (None: no hidden layer)
DropRate = Annotated[float, Range(0, 1, high_open=True)]  # head_dropout and the other dropout and drop-path rates

COMMON_ARGS = """\
    num_classes: number of output logits (the head's size).
    in_chans: number of input image channels (1 for grey images).
    weights: None for random initialisation, a local .pt/.pth/.safetensors state dict (tensors
        whose names or shapes do not fit are skipped and reported), or "imagenet" for the
        pretrained weights, which needs the network or the Hugging Face cache (checked before any download).
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


def check_names(parameter: str, names: str | Sequence[str], allowed: Sequence[str]) -> None:
    """ParameterError naming the choices when one of ``names`` (or ``names`` itself) is not in ``allowed``."""
    for name in [names] if isinstance(names, str) else names:
        if name not in allowed:
            raise ParameterError(f"{parameter}: unknown name {name!r}{did_you_mean(name, allowed)} "
                                 f"(choices: {', '.join(allowed)})")


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

    def setup_weights_and_freezing(self, weights: str | None, freeze: Sequence[str], timm_name: str,
                                   **timm_kwargs: Any) -> None:
        """Load ``weights``, then freeze ``freeze``.

        ``weights`` is None, a local file, or "imagenet": the pretrained weights timm has for
        ``timm_name`` (created with ``timm_kwargs``), downloaded on first use. A download that
        cannot work (HF_HUB_OFFLINE set, or no answer from the hub within seconds) is refused at
        once unless the Hugging Face cache holds them; that and a failed one are DataErrors
        naming the ways on without the network.
        """
        what = f"timm model '{timm_name}'"
        local, pretrained = resolve_weights(weights, {"imagenet": timm_name}, what)
        if local is not None:
            self.load_weights(read_state_dict(local), str(local))
        elif pretrained is not None:
            import timm

            hub_repo = getattr(timm.models.get_pretrained_cfg(pretrained), "hf_hub_id", None)
            with downloading_weights(str(weights), what, hub_repo):
                pretrained_model = timm.create_model(pretrained, pretrained=True, num_classes=0, **timm_kwargs)
            self.load_weights(pretrained_model.state_dict(), str(weights))
        self.freeze(freeze)

    def load_weights(self, state: dict[str, Tensor], source: str) -> None:
        """Load the tensors of ``state`` that fit (a bare checkpoint's under ``native_prefix``); log the report."""
        report = self.weights_report = load_matching(self, state, source, prefixes=(self.native_prefix,))
        # a fresh head is expected; a backbone tensor that did not fit is worth a warning
        backbone_misfits = [n for n in [*report.skipped, *report.missing] if not n.startswith(HEAD + ".")]
        (log.warning if backbone_misfits else log.info)(report.summary())

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
