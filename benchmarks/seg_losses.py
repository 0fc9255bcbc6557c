"""Forward + backward time of the DIBE loss against smp's Focal + Tversky, measured side by side in one run.

    python benchmarks/seg_losses.py [--repeat 50] [--shape 8,1,256,256] [--device cpu]

The reference is what a segmentation-models-pytorch user would write for the same kind of
compound loss: 0.5 * FocalLoss("binary") + 0.5 * TverskyLoss("binary"), with the same λ, γ and
α/β (smp's alpha weighs FP and beta FN, so they are swapped to match defectlab's α on FN).
Reports the median wall time (time.perf_counter) and process CPU time of ``--repeat`` steps after
warm-up, the two losses taking turns step by step, and the ratios dibe / smp (aim: at most 1.3).
torch's thread count is left as it is; on a busy machine the CPU-time ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import defectlab as dl
import torch
from segmentation_models_pytorch.losses import FocalLoss, TverskyLoss


def smp_focal_tversky(theta: float = 0.5, lambda_: float = 0.25, gamma: float = 2.0, alpha: float = 0.3):
    """θ·Focal + (1 − θ)·Tversky from smp (its alpha is the FP weight: defectlab's β = 1 − α)."""
    focal = FocalLoss("binary", alpha=lambda_, gamma=gamma)
    tversky = TverskyLoss("binary", alpha=1 - alpha, beta=alpha, smooth=1.0)
    return lambda pred, target: theta * focal(pred, target) + (1 - theta) * tversky(pred, target)


def step_seconds(loss, logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Wall time and process CPU time of one forward + backward pass."""
    logits.grad = None
    start, start_cpu = time.perf_counter(), time.process_time()
    loss(logits, target).backward()
    if logits.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def compare(losses: dict, logits: torch.Tensor, target: torch.Tensor, repeat: int,
            warmup: int = 5) -> dict[str, tuple[float, float]]:
    """Median wall and CPU time of a step of each loss; the losses take turns step by step, so
    load from other processes on the machine hits all alike."""
    for loss in losses.values():
        for _ in range(warmup):
            step_seconds(loss, logits, target)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in losses}
    for _ in range(repeat):
        for name, loss in losses.items():
            times[name].append(step_seconds(loss, logits, target))
    return {name: (statistics.median(t[0] for t in values), statistics.median(t[1] for t in values))
            for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--shape", default="8,1,256,256", help="N,1,H,W of the logits")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(args.device).requires_grad_()
    target = (torch.rand(shape, generator=generator) < 0.05).float().to(args.device)

    losses = {"defectlab dibe": dl.create("loss", "dibe"), "smp focal+tversky": smp_focal_tversky()}
    result = compare(losses, logits, target, args.repeat)

    print(f"logits {shape} on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat} steps, taking turns")
    print(f"{'loss':<20} {'wall ms':>8} {'cpu ms':>8}")
    for name, (wall, cpu) in result.items():
        print(f"{name:<20} {wall * 1e3:8.2f} {cpu * 1e3:8.2f}")
    (wall, cpu), (ref_wall, ref_cpu) = result["defectlab dibe"], result["smp focal+tversky"]
    print(f"ratio dibe / smp: {wall / ref_wall:.2f} (wall), {cpu / ref_cpu:.2f} (cpu)")


if __name__ == "__main__":
    main()
