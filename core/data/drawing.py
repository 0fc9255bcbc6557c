"""Boxes drawn on an image, for predictions and reports: one colour per class, a caption above each box."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Box colours, taken in turn by class index (readable on grey and colour images alike).
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw_boxes(image: Any, boxes: Sequence[tuple[Sequence[float], str]], classes: Sequence[str] = ()) -> Any:
    """A PIL RGB copy of ``image`` (uint8 array or PIL image) with each (x1, y1, x2, y2 pixels, caption) drawn.

    A box's colour follows the position in ``classes`` of its caption's first word (so one class
    keeps one colour across images), else the order of the captions.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    picture = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 200))
    names = list(classes) or list(dict.fromkeys(caption.split(" ")[0] for _, caption in boxes))
    for box, caption in boxes:
        name = caption.split(" ")[0]
        colour = PALETTE[(names.index(name) if name in names else 0) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if caption:
            left, top, right, bottom = draw.textbbox((x1, y1), caption)
            lift = bottom - top + 2
            draw.rectangle([x1, max(0, y1 - lift), x1 + right - left + 4, max(lift, y1)], fill=colour)
            draw.text((x1 + 2, max(0, y1 - lift)), caption, fill=(0, 0, 0))
    return picture
