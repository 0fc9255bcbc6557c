"""Progress of a long pass over batches (training, predicting): a tqdm bar on a terminal, else a line every
PROGRESS_EVERY seconds, the progress bar of a log file or CI, where a bar shows nothing.

No torch, and tqdm only when it is installed: the runtime install (predicting with an ONNX file) has
no tqdm and shows the lines on a terminal too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sized
from typing import Any

#: Seconds between two progress lines when stderr is not a terminal (a log file, CI), where tqdm shows no bar.
PROGRESS_EVERY = 30.0


def clock(seconds: float) -> str:
    """``4:05`` or ``1:02:03``: a duration as a clock shows it."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (not a pipe, a file, or a closed stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def to_stderr(text: str) -> None:
    """A progress line on standard error."""
    print(text, file=sys.stderr, flush=True)


class ProgressLines:
    """The batches of ``loader``, with a line to ``say`` every PROGRESS_EVERY seconds, e.g. ``epoch 3/40 batch
    120/492, 45 img/s, loss 0.4123, eta 6:03`` (eta: the end of this pass); ``images`` counts a batch's images."""

    def __init__(self, loader: Sized, label: str, say: Callable[[str], None],
                 images: Callable[[Any], int] = len):
        self.loader, self.label, self.say, self.images = loader, label, say, images
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Numbers shown after the rate (tqdm's call, so the loop need not know which it has)."""
        self.postfix = values

    def __iter__(self) -> Iterator[Any]:
        total = len(self.loader)
        started = last = time.monotonic()
        images = 0
        for step, batch in enumerate(self.loader, 1):  # type: ignore[call-overload]
            yield batch
            images += self.images(batch)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last, seconds = now, now - started
                self.say(", ".join([f"{self.label} batch {step}/{total}", f"{images / max(seconds, 1e-9):.0f} img/s",
                                    *(f"{k} {v}" for k, v in self.postfix.items()),
                                    f"eta {clock(seconds / step * (total - step))}"]))


def progress(loader: Sized, label: str, say: Callable[[str], None] = to_stderr, shown: bool = True,
             images: Callable[[Any], int] = len) -> Any:
    """``loader`` with its progress when ``shown``: a tqdm bar when stderr is a terminal and tqdm is installed,
    else :class:`ProgressLines`. Either takes ``set_postfix``."""
    if shown and is_terminal(sys.stderr):
        try:
            from tqdm import tqdm
        except ImportError:  # the runtime install: lines on the terminal too
            pass
        else:
            return tqdm(loader, desc=label, leave=False, file=sys.stderr, dynamic_ncols=True)
    return ProgressLines(loader, label, say if shown else _silent, images)


def _silent(text: str) -> None:
    """Progress not shown."""
