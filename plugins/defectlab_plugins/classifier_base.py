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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from defectlab import DataError, ParameterError, did_you_mean

log = logging.getLogger("defectlab.backbones")

IMAGENET = "imagenet"
ALL_BUT_HEAD = "all_but_head"
HEAD = "head"
# Keys under which training checkpoints commonly nest the model's state dict.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")
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


@dataclass
class WeightReport:
    """Which tensors of a weights source went where.

    ``loaded``: copied into the model. ``skipped``: same name, other shape (file shape, model
    shape). ``unused``: in the file, not in the model. ``missing``: in the model, not in the
    file (they keep their initial values).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph: counts, then the names that did not fit."""
        lines = [f"weights from {self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
                 f"(shape mismatch), {len(self.unused)} in the file only, {len(self.missing)} in the model only"]
        lines += [f"  skipped {name}: file {list(a)} vs model {list(b)}" for name, (a, b) in self.skipped.items()]
        if self.missing:
            lines.append("  in the model only (initial values kept): " + ", ".join(self.missing))
        return "\n".join(lines)


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


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a .safetensors file or a torch-saved (possibly nested) state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"weights: {str(path)!r} is neither 'imagenet' nor an existing file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"weights: cannot read {path} as a state dict ({exc})") from exc
    while isinstance(loaded, Mapping) and not any(isinstance(v, Tensor) for v in loaded.values()):
        nested = next((loaded[k] for k in NESTED_STATE_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if nested is None:
            break
        loaded = nested
    if not isinstance(loaded, Mapping):
        raise DataError(f"weights: {path} holds a {type(loaded).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, Tensor)}


def fit_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str,
                   native_prefix: str = "") -> WeightReport:
    """Copy the tensors of ``state`` that fit ``model`` by name and shape; report the rest.

    A name not found as it is is tried under ``native_prefix`` (so the state dict of a bare timm
    model loads into a wrapper that holds it as ``encoder``).
    """
    own = model.state_dict()
    report = WeightReport(source)
    matched: dict[str, Tensor] = {}
    for name, tensor in state.items():
        target = next((key for key in (name, native_prefix + name) if key in own), None)
        if target is None:
            report.unused.append(name)
        elif tensor.shape != own[target].shape:
            report.skipped[target] = (tuple(tensor.shape), tuple(own[target].shape))
        else:
            matched[target] = tensor
    if not matched:
        raise DataError(f"weights: none of the {len(state)} tensors from {source} fit this model "
                        f"(first names: {', '.join(list(state)[:3])}); is it a checkpoint of another architecture?")
    model.load_state_dict(matched, strict=False)
    report.loaded = list(matched)
    report.missing = [name for name in own if name not in matched and name not in report.skipped]
    return report


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
            else:
                state, source = read_state_dict(weights), str(weights)
            self.weights_report = fit_state_dict(self, state, source, self.native_prefix)
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
