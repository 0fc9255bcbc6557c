"""Task-guided feature selection (Liu et al. 2026) as FCOS's loss computation.

The seed's abstract names the steps but gives no formulas; the choices here follow FSAF (online
selection of one level per instance by its loss) and ATSS-style centre candidates:

1. **Candidates.** On each of the first ``tgfs_levels`` FPN levels (P3, P4, P5 by default), a
   box's candidate positives are the anchor points inside it and within
   ``center_sampling_radius`` strides of its centre (FCOS's centre sampling, without its scale
   ranges). A box with no candidate anywhere (smaller than the P3 grid) takes the P3 point
   nearest its centre.
2. **Score.** A candidate's cost is its classification loss (sigmoid focal, summed over
   classes, with the box's class as the target) plus ``tgfs_loc_weight`` times its
   localisation loss (GIoU of the box it predicts), under the current weights and without
   gradient (:meth:`TaskGuidedSelection.candidate_cost`). A level's score is the mean cost of
   the box's candidates on it.
3. **Selection.** The box takes all its candidates on the level of the lowest score; a point
   claimed by several boxes goes to the smallest box (FCOS's rule).
4. **Reweighting.** A positive of cost c has quality q = exp(-c) and weight q^gamma, normalised
   so that a box's positives average 1 (:meth:`TaskGuidedSelection.reweight`): the samples the
   network already fits well carry more of the box's loss, the box as a whole counts as much as
   under FCOS. The weights multiply the positives' classification, GIoU and centre-ness losses;
   negatives keep weight 1. gamma = 0 gives plain level selection.

Each step is a method; a subclass that overrides ``candidate_cost`` or ``reweight`` (and is
registered as its own backbone component) changes that step only. Nothing here runs at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss


def level_of_anchors(num_anchors_per_level: list[int], device: torch.device) -> Tensor:
    """The FPN level (0 = P3) of every anchor, in the order the head lists them."""
    counts = torch.tensor(num_anchors_per_level, device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), counts)


def owners(point: Tensor, box: Tensor, area: Tensor, count: int) -> Tensor:
    """Which (point, box) pairs keep their point: the smallest box's (ties: the lowest box index), one per point."""
    largest = torch.iinfo(box.dtype).max
    smallest = torch.full((count,), float("inf"), device=area.device).scatter_reduce(0, point, area, "amin")
    contender = torch.where(area == smallest[point], box, torch.full_like(box, largest))
    first = torch.full((count,), largest, device=box.device).scatter_reduce(0, point, contender, "amin")
    return box == first[point]


class TaskGuidedSelection:
    """TGFS's assignment and weighted loss, mixed into a torchvision ``FCOS`` (``box_coder``,
    ``center_sampling_radius`` and the ``tgfs_*`` settings come from it)."""

    tgfs_levels: int
    tgfs_loc_weight: float
    tgfs_gamma: float

    def candidate_cost(self, cls_loss: Tensor, loc_loss: Tensor) -> Tensor:
        """The cost of each candidate from its classification and localisation losses (lower is better)."""
        return cls_loss + self.tgfs_loc_weight * loc_loss

    def reweight(self, cost: Tensor, box: Tensor, boxes: int) -> Tensor:
        """The loss weight of each positive: exp(-cost)^gamma, normalised to mean 1 over each box's positives."""
        weight = torch.exp(-self.tgfs_gamma * cost)
        total = torch.zeros(boxes, dtype=weight.dtype, device=weight.device).index_add_(0, box, weight)
        count = torch.zeros(boxes, dtype=weight.dtype, device=weight.device).index_add_(0, box, torch.ones_like(weight))
        return weight * count[box] / total[box].clamp_min(1e-12)

    @torch.no_grad()
    def select(self, target: dict[str, Tensor], cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor,
               num_anchors_per_level: list[int]) -> tuple[Tensor, Tensor]:
        """For one image: the matched box of every anchor (-1: background) and every anchor's loss weight."""
        count = anchors.shape[0]
        matched = torch.full((count,), -1, dtype=torch.long, device=anchors.device)
        weights = torch.ones(count, device=anchors.device)
        boxes, labels = target["boxes"], target["labels"]
        if not len(boxes):
            return matched, weights
        levels = level_of_anchors(num_anchors_per_level, anchors.device)
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        sizes = anchors[:, 2] - anchors[:, 0]
        box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        near = (centres[:, None] - box_centres[None]).abs().amax(-1) < self.center_sampling_radius * sizes[:, None]
        inside = torch.cat([centres[:, None] - boxes[None, :, :2], boxes[None, :, 2:] - centres[:, None]], -1)
        candidate = near & (inside.amin(-1) > 0) & (levels < self.tgfs_levels)[:, None]  # (anchors, boxes)
        for box in torch.nonzero(~candidate.any(0)).flatten():  # too small for any grid point: the nearest P3 point
            distance = (centres - box_centres[box]).norm(dim=1).masked_fill(levels != 0, float("inf"))
            candidate[distance.argmin(), box] = True
        point, box = torch.nonzero(candidate, as_tuple=True)
        predicted = self.box_coder.decode(bbox_regression[point], anchors[point])
        cost = self.candidate_cost(classification_loss(cls_logits[point], labels[box]),
                                   generalized_box_iou_loss(predicted, boxes[box]))
        slots = box * len(num_anchors_per_level) + levels[point]  # (box, level) pairs, flattened
        table = len(boxes) * len(num_anchors_per_level)
        total = torch.zeros(table, device=cost.device).index_add_(0, slots, cost)
        seen = torch.zeros(table, device=cost.device).index_add_(0, slots, torch.ones_like(cost))
        score = (total / seen.clamp_min(1)).masked_fill(seen == 0, float("inf")).view(len(boxes), -1)
        keep = levels[point] == score.argmin(1)[box]  # each box keeps its candidates on its best level
        point, box, cost = point[keep], box[keep], cost[keep]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        weight = self.reweight(cost, box, len(boxes))
        win = owners(point, box, areas[box], count)
        matched[point[win]] = box[win]
        weights[point[win]] = weight[win]
        return matched, weights

    def task_guided_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                         anchors: list[Tensor], num_anchors_per_level: list[int]) -> dict[str, Tensor]:
        """FCOS's three losses over TGFS's positives, each positive weighted, divided by the number of positives."""
        cls_logits, regression, ctrness = (head_outputs[k] for k in ("cls_logits", "bbox_regression", "bbox_ctrness"))
        picks = [self.select(t, cls_logits[i].float(), regression[i].float(), anchors[i], num_anchors_per_level)
                 for i, t in enumerate(targets)]
        matched, weights = torch.stack([m for m, _ in picks]), torch.stack([w for _, w in picks])
        positive = matched >= 0
        positives = max(1, int(positive.sum()))
        gt_boxes = torch.stack([t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else t["boxes"].new_zeros((len(m), 4))
                                for t, m in zip(targets, matched)])
        gt_labels = torch.stack([t["labels"][m.clamp(min=0)] if len(t["labels"]) else m.clamp(min=0)
                                 for t, m in zip(targets, matched)])
        gt_classes = torch.zeros_like(cls_logits)
        image, point = torch.nonzero(positive, as_tuple=True)
        gt_classes[image, point, gt_labels[image, point]] = 1.0
        row_weight = torch.where(positive, weights, torch.ones_like(weights))
        classification = (sigmoid_focal_loss(cls_logits, gt_classes, reduction="none").sum(-1) * row_weight).sum()
        all_anchors = torch.stack(anchors)
        predicted = self.box_coder.decode(regression, all_anchors)
        weight = weights[positive]
        giou = generalized_box_iou_loss(predicted[positive], gt_boxes[positive], reduction="none")
        encoded = self.box_coder.encode(all_anchors, gt_boxes)[positive]
        left_right, top_bottom = encoded[:, [0, 2]], encoded[:, [1, 3]]
        # a fallback point of a box too thin for the grid lies outside it: its centre-ness target is 0, not NaN
        centreness = torch.sqrt((left_right.amin(-1) / left_right.amax(-1).clamp_min(1e-6)).clamp_min(0)
                                * (top_bottom.amin(-1) / top_bottom.amax(-1).clamp_min(1e-6)).clamp_min(0))
        ctr = F.binary_cross_entropy_with_logits(ctrness.squeeze(-1)[positive], centreness, reduction="none")
        return {"classification": classification / positives, "bbox_regression": (giou * weight).sum() / positives,
                "bbox_ctrness": (ctr * weight).sum() / positives}


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Sigmoid focal loss summed over the classes, for rows of logits with one true class each."""
    target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return sigmoid_focal_loss(logits, target, reduction="none").sum(-1)
