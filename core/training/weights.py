"""Reading weight files and loading the tensors that fit: one loader for backbones, checkpoints and transfer.

A weights file may be a bare state dict, a training checkpoint that nests it (``model``,
``state_dict``, ...), a saved module, or a ``.safetensors`` file; names written by
DistributedDataParallel or ``torch.compile`` are unwrapped. Tensors that do not fit the model
by name and shape are skipped and reported, never fatal, so a checkpoint with another head or
input size still gives what fits; a file of which nothing fits is an error.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from defectlab.plugin_system.errors import DataError
from defectlab.training.checkpoints import load_torch_file

if TYPE_CHECKING:
    from torch import Tensor, nn

#: Keys under which training checkpoints commonly nest the model's state dict.
NESTED_STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "module")
#: Name prefixes added by wrappers (DDP, torch.compile) that a plain model does not have.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Buffers that count steps rather than hold learnt values: matching only these is matching nothing.
BOOKKEEPING_BUFFERS = ("num_batches_tracked",)
#: The values of HF_HUB_OFFLINE that huggingface_hub reads as true.
OFFLINE_VALUES = {"1", "true", "yes", "on"}
LOCAL_FILE_ADVICE = ("download them once where the network is available, save the model's state dict "
                     "(torch.save(model.state_dict(), 'weights.pt')) and pass weights='weights.pt' "
                     "(a local .pt/.pth/.safetensors file)")
#: The ways on without the network, named by every error about weights that need a download.
WAYS_OUT = ("train without them: --set model.weights=none (random initialisation); or use weights already on "
            "this machine: HF_HUB_OFFLINE=1 with them in the Hugging Face cache, or " + LOCAL_FILE_ADVICE)
#: Seconds the Hugging Face hub has to accept a connection before a download of named weights is given up.
HUB_TIMEOUT = 2.0


@dataclass
class WeightReport:
    """Which tensors of a weights source went where.

    ``loaded``: copied into the model. ``skipped``: same name, other shape (source shape,
    model shape). ``unused``: in the source, not in the model (or not asked for). ``missing``:
    in the model, not loaded (they keep their initial values).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph: counts, then the names that did not fit."""
        lines = [f"weights from {self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
                 f"(shape mismatch), {len(self.unused)} in the source only, {len(self.missing)} in the model only"]
        lines += [f"  skipped {name}: source {list(a)} vs model {list(b)}" for name, (a, b) in self.skipped.items()]
        if self.missing:
            shown = ", ".join(self.missing[:12]) + (f" and {len(self.missing) - 12} more" if len(self.missing) > 12 else "")
            lines.append("  in the model only (initial values kept): " + shown)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for run directories."""
        return {"source": self.source, "loaded": self.loaded, "unused": self.unused, "missing": self.missing,
                "skipped": {k: {"source": list(a), "model": list(b)} for k, (a, b) in self.skipped.items()}}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file: a (nested) state dict, a saved module or a .safetensors file."""
    import torch
    from torch import nn

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"weights: '{path}' is not an existing file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors' own errors all mean the same to the user
            raise DataError(f"weights: cannot read '{path}' as a state dict ({exc})") from exc
    else:
        loaded = load_torch_file(path, "weights file")
    if isinstance(loaded, nn.Module):
        loaded = loaded.state_dict()
    while isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        nested = next((loaded[k] for k in NESTED_STATE_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if nested is None:
            break
        loaded = nested
    if not isinstance(loaded, Mapping) or not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise DataError(f"weights: '{path}' holds no state dict (a mapping of tensor names to tensors); save one "
                        f"with torch.save(model.state_dict(), PATH), or of the part to load, e.g. "
                        f"torch.save(model.encoder.state_dict(), PATH)")
    return {unwrapped(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def unwrapped(name: str) -> str:
    """A tensor name without the prefixes DDP and torch.compile add."""
    for prefix in WRAPPER_PREFIXES:
        name = name.removeprefix(prefix)
    return name


def load_matching(model: nn.Module, state: Mapping[str, Tensor], source: str, prefixes: tuple[str, ...] = ("",),
                  adapt: Callable[[Tensor, Tensor], Tensor] | None = None) -> WeightReport:
    """Copy the tensors of ``state`` that fit ``model`` by name and shape; report the rest.

    A name is tried as it is, then under each of ``prefixes`` (so a bare encoder's state dict
    loads into a model that holds it as ``encoder``). ``adapt(tensor, model_tensor)`` may
    reshape a tensor before the shape check (e.g. an RGB first convolution summed for grey
    input). Raises DataError when nothing fits.
    """
    own = model.state_dict()
    report = WeightReport(source)
    matched: dict[str, Tensor] = {}
    for name, tensor in state.items():
        target = next((p + name for p in ("", *prefixes) if p + name in own), None)
        if target is None:
            report.unused.append(name)
            continue
        if adapt is not None and tensor.shape != own[target].shape:
            tensor = adapt(tensor, own[target])
        if tensor.shape != own[target].shape:
            report.skipped[target] = (tuple(tensor.shape), tuple(own[target].shape))
        else:
            matched[target] = tensor
    if all(name.endswith(BOOKKEEPING_BUFFERS) for name in matched):
        parts = "".join(f" or of its {p.rstrip('.')}" for p in prefixes if p)
        raise DataError(f"weights: none of the {len(state)} tensors from {source} fit this model (first names: "
                        f"{', '.join(list(state)[:3])}); is it a checkpoint of another architecture? Give weights "
                        f"of this architecture{parts}")
    model.load_state_dict(matched, strict=False)
    report.loaded = list(matched)
    report.missing = [name for name in own if name not in matched and name not in report.skipped]
    return report


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def hub_cached(repo: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of the model repository ``repo`` ('timm/resnet18.a1_in1k')."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_address() -> tuple[str, int]:
    """(host, port) a download from the hub connects to: the https proxy if one is set, else HF_ENDPOINT's host."""
    proxy = urllib.request.getproxies().get("https")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """Whether a connection to the hub (or the proxy in front of it) opens within ``timeout`` seconds."""
    try:
        socket.create_connection(hub_address(), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_weights(weights: str | os.PathLike[str] | None, named: Mapping[str, Any], what: str
                    ) -> tuple[Path | None, Any]:
    """(local file, named source) for a backbone's ``weights`` value; at most one is set.

    ``named`` maps the source names ``what`` knows (e.g. 'imagenet') to what its builder needs. A
    named source means a download, which :func:`downloading_weights` checks before it starts; an
    existing file wins over a source of the same name; anything else is a DataError listing the
    sources.
    """
    if weights is None:
        return None, None
    path = Path(weights).expanduser()
    if path.is_file():
        return path, None
    if str(weights) in named:
        return None, named[str(weights)]
    if path.exists():
        raise DataError(f"weights '{weights}' is a folder; give the state-dict file")
    sources = ", ".join(repr(n) for n in named) or "none"
    raise DataError(f"weights '{weights}' is not a file, nor a named source of {what} (sources: {sources})")


def check_download(weights: str, what: str, hub_repo: str | None = None) -> None:
    """Refuse at once a download that cannot work: HF_HUB_OFFLINE is set, or the hub does not answer within
    HUB_TIMEOUT. Weights that ``hub_repo`` (their Hugging Face repository) has in the local cache pass."""
    if hub_repo is not None and hub_cached(hub_repo):
        return
    if hub_offline():
        raise DataError(f"weights='{weights}' for {what} needs a download, but HF_HUB_OFFLINE is set and the "
                        f"Hugging Face cache does not hold them; {WAYS_OUT}")
    if hub_repo is not None and not hub_reachable():
        host, port = hub_address()
        raise DataError(f"weights='{weights}' for {what} needs a download, but {host}:{port} did not answer within "
                        f"{HUB_TIMEOUT:g} s (no network?); {WAYS_OUT}")


@contextmanager
def downloading_weights(weights: str, what: str, hub_repo: str | None = None) -> Iterator[None]:
    """Around the download of named weights: first :func:`check_download`, then any failure (network, hub,
    cache) becomes one DataError that names the ways on without the network."""
    check_download(weights, what, hub_repo)
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # every download failure means the same to the user
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not download weights='{weights}' for {what} ({type(exc).__name__}: {cause}); "
                        f"{WAYS_OUT}") from exc
