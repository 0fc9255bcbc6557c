"""Pixel-level scores of anomaly maps against 0/1 defect masks: pixel AUROC and PRO (per-region overlap).

Both come from one sweep of a threshold t down the map values. At each t: FPR = the share of
good pixels (mask 0, over all images) scoring ≥ t; TPR = the share of defect pixels scoring
≥ t; PRO = the mean, over the connected defect regions of all masks (8-connectivity: pixels
touching by a side or a corner belong to one region; each image's regions are its own), of
the share of the region's pixels scoring ≥ t (Bergmann et al., MVTec AD, IJCV 2021). Pixel
AUROC is the area under TPR(FPR); PRO the area under PRO(FPR) for FPR in [0, 0.3], divided by
0.3.

Exact curves take every distinct map value as a threshold. Histogram curves count the pixels
in ``bins`` equal bins between the lowest and highest map value and take the bin edges as
thresholds; pixels sharing a bin then count as tied, which moves pixel AUROC by at most half
the share of (defect, good) pixel pairs sharing a bin. With 10,000 bins on continuous scores
the tests find both scores within 1e-3 of the exact ones (a few extreme map values widen the
bins and lower the accuracy). Memory: exact needs about 100 bytes a pixel at once, the
histogram one image's pixels at a time and a few arrays of ``bins``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from defectlab import DataError

from defectlab_plugins.anomaly_metrics.curves import area_under, sums_at_or_above

PRO_MAX_FPR = 0.3
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class PixelCurves:
    """FPR, TPR and PRO at each threshold, from above the highest map value (all 0) down to the lowest (all 1)."""

    fpr: np.ndarray
    tpr: np.ndarray
    pro: np.ndarray
    good_pixels: int
    defect_pixels: int
    regions: int
    bins: int | None  # None: exact

    def auroc(self) -> float:
        """Pixel AUROC: the area under TPR against FPR."""
        return area_under(self.fpr, self.tpr)

    def pro_score(self, max_fpr: float = PRO_MAX_FPR) -> float:
        """The area under PRO against FPR for FPR in [0, ``max_fpr``], divided by ``max_fpr``."""
        return area_under(self.fpr, self.pro, max_fpr) / max_fpr


def region_shares(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Each pixel's 1 / size of its 8-connected defect region in an (H, W) mask (0 on good pixels), and the regions."""
    from scipy import ndimage

    regions, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    inverse = np.zeros(count + 1)
    inverse[1:] = 1.0 / sizes[1:]
    return inverse[regions], count


def pixel_curves(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int | None = None) -> PixelCurves:
    """The FPR, TPR and PRO curves of (H, W) anomaly maps against their 0/1 masks (image sizes may differ).

    ``bins`` None: exact; else from a histogram of that many bins (see the module's docstring).
    """
    masks = [np.asarray(mask, dtype=bool) for mask in masks]
    defect_pixels = sum(int(mask.sum()) for mask in masks)
    good_pixels = sum(mask.size for mask in masks) - defect_pixels
    if not defect_pixels or not good_pixels:
        kind = "defect (mask 1)" if not defect_pixels else "good (mask 0)"
        raise DataError(f"pixel AUROC and PRO need defect and good pixels, but the {len(masks)} masks hold no {kind} "
                        f"pixel")
    if bins is None:
        good_above, defect_above, shares_above, regions = exact_sums_above(maps, masks)
    else:
        good_above, defect_above, shares_above, regions = binned_sums_above(maps, masks, bins)
    return PixelCurves(fpr=np.append(0.0, good_above / good_pixels), tpr=np.append(0.0, defect_above / defect_pixels),
                       pro=np.append(0.0, shares_above / regions), good_pixels=good_pixels,
                       defect_pixels=defect_pixels, regions=regions, bins=bins)


def exact_sums_above(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Good pixels, defect pixels and region shares at or above each distinct map value, top down; the regions.

    Every pixel at once: about 100 bytes a pixel while it runs.
    """
    shares, counts = zip(*(region_shares(mask) for mask in masks))
    defect = np.concatenate([mask.ravel() for mask in masks])
    _, (good_above, defect_above, shares_above) = sums_at_or_above(
        np.concatenate([np.ravel(heat) for heat in maps]), [~defect, defect, np.concatenate(shares, axis=None)])
    return good_above, defect_above, shares_above, sum(counts)


def binned_sums_above(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Good pixels, defect pixels and region shares at or above each of ``bins`` equal bins' lower edges, top down;
    the regions.

    One image at a time: beyond the ``bins`` sums, no more than one image's pixels are held.
    """
    low = min(float(np.min(heat)) for heat in maps)
    high = max(float(np.max(heat)) for heat in maps)
    width = (high - low) / bins or 1.0  # all values equal: one bin holds them
    sums, regions = np.zeros((3, bins)), 0
    for heat, mask in zip(maps, masks):
        index = np.minimum(((np.asarray(heat, dtype=np.float64) - low) / width).astype(np.int64), bins - 1).ravel()
        share, count = region_shares(mask)
        regions += count
        for row, weight in enumerate((~mask, mask, share)):
            sums[row] += np.bincount(index, weights=weight.ravel(), minlength=bins)
    good_above, defect_above, shares_above = np.cumsum(sums[:, ::-1], axis=1)
    return good_above, defect_above, shares_above, regions


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int | None = None) -> float:
    """Pixel AUROC of anomaly maps against 0/1 masks: P(a defect pixel scores above a good one), ties half."""
    return pixel_curves(maps, masks, bins).auroc()


def pro_score(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = PRO_MAX_FPR,
              bins: int | None = None) -> float:
    """PRO of anomaly maps against 0/1 masks: the area under PRO(FPR) up to ``max_fpr``, divided by it."""
    return pixel_curves(maps, masks, bins).pro_score(max_fpr)
