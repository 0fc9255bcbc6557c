"""Trials per hour of ``defectlab tune`` with one worker process and with two on one SQLite study.

    python benchmarks/tune_workers.py [--trials 8] [--rounds 2] [--epochs 1] [--threads 1]

The data are a class folder written here: 40 bright and 40 dark 32 px grey images with noise
(seed 0). Every trial trains a ResNet-18 (random initialisation, ``model.weights = "none"``) for
``--epochs`` at 32 px, batch 16, on the default 70/15/15 split, with its final test evaluation
and run report, as any trial does; the search is ``train.lr`` on a log scale from 1e-4 to 1e-1,
pruning off so that every trial costs the same. A round starts ``--trials`` trials in all as one
study in a fresh SQLite file, once with one ``defectlab tune`` process and once with two joined
by ``--storage``/``--study`` (every other round the two go first), each process with
``OMP_NUM_THREADS=--threads``. Reported: the wall time from the start of the processes to the
end of the last (process start, the metric check and the report included), the CPU seconds of
all the processes together, trials per hour, and the ratio of two workers to one. The aim, on a
machine with two free cores, is at least 1.6x: the workers share nothing but the study, so the
ratio shows what the storage and the bookkeeping of the limit cost. Timings are never asserted
in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from defectlab import format_table
from PIL import Image


def write_images(root: Path, per_class: int = 40, size: int = 32) -> Path:
    """Bright and dark grey images with noise, one folder per class."""
    rng = np.random.default_rng(0)
    for label, mean in (("bright", 170), ("dark", 85)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.clip(rng.normal(mean, 40, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{index:02d}.png")
    return root


def study(workdir: Path, config: Path, workers: int, trials: int, threads: int) -> tuple[float, float, list[dict]]:
    """Wall and CPU seconds of a study of ``trials`` trials run by ``workers`` processes, and its trials."""
    storage = f"sqlite:///{workdir / 'study.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "defectlab", "tune", str(config), "--param", "train.lr=log:1e-4:1e-1",
               "--trials", str(trials), "--no-pruning", "--storage", storage, "--study", "bench", "--json"]
    started, cpu = time.perf_counter(), children_cpu()
    processes = [subprocess.Popen([*command, "--out", str(workdir / f"worker-{k}")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for k in range(workers)]
    outputs = [p.communicate() for p in processes]
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    for process, (_, err) in zip(processes, outputs):
        if process.returncode:
            sys.exit(f"a worker failed:\n{err[-3000:]}")
    return seconds, cpu, json.loads(outputs[-1][0])["trials"]


def children_cpu() -> float:
    """User and system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials of each study")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        data = write_images(root / "data")
        config = root / "bench.toml"
        config.write_text(f'[data]\ndataset = "{data}"\nimage_size = 32\nchannels = 1\nbatch_size = 16\n'
                          f'[model]\nname = "resnet18"\nweights = "none"\n'
                          f'[train]\nepochs = {args.epochs}\nprogress = false\n')
        times: dict[int, list[float]] = {1: [], 2: []}
        cpus: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            for workers in ((1, 2) if round_ % 2 == 0 else (2, 1)):
                seconds, cpu, trials = study(root / f"round-{round_}-{workers}", config, workers, args.trials,
                                        args.threads)
                numbers = sorted(t["number"] for t in trials)
                assert numbers == list(range(args.trials)), numbers  # the limit held, no trial twice
                times[workers].append(seconds)
                cpus[workers].append(cpu)
                print(f"round {round_ + 1}, {workers} worker(s): {args.trials} trials in {seconds:.1f} s wall, "
                      f"{cpu:.1f} s CPU (load average {os.getloadavg()[0]:.1f})", flush=True)
    rows = []
    for workers, measured in times.items():
        median = statistics.median(measured)
        rows.append([workers, f"{median:.1f}", f"{min(measured):.1f}-{max(measured):.1f}",
                     f"{statistics.median(cpus[workers]):.1f}", f"{args.trials / median * 3600:.0f}",
                     f"{statistics.median(times[1]) / median:.2f}"])
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s) a "
          f"worker, {args.trials} trials of {args.epochs} epoch(s), medians of {args.rounds} round(s)")
    print(format_table(["workers", "wall s", "range", "CPU s", "trials/hour", "speed-up"], rows))


if __name__ == "__main__":
    main()
