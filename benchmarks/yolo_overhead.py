"""defectlab's YOLOv5 training against ultralytics' own ``train`` on the same data and epochs, in turns.

    python benchmarks/yolo_overhead.py [--rounds 3] [--epochs 10] [--count 240] [--size 128] [--batch 16]

The data: ``synthetic_defects`` (``--count`` images of ``--size`` px, seed 0; splits 70/15/15 by
index) written once as a YOLO layout with ``defectlab.convert_dataset``. Then, per round, one
fresh process per side, the two in turns (every other round ultralytics goes first):

(a) ultralytics: ``YOLO("yolov5n.yaml").train(data=<that data.yaml>, ...)``, what an ultralytics
    user runs;
(b) defectlab: ``defectlab.train(config)`` on the same folder (read by the ``yolo`` reader) with
    ``model.name = "yolov5"``: the data module, the splits written again as a YOLO layout at
    ``data.image_size``, the starting network as a file, ultralytics' trainer with defectlab's
    per-epoch callback (metrics.jsonl, last.pt/best.pt in float32, run.json), the test split
    scored by the ``detection`` evaluator, report.html.

Both get the same trainer settings (imgsz, batch, epochs, AdamW lr 1e-3 with a cosine schedule
to 1e-5, weight decay 5e-4, no warm-up, seed 0, deterministic, CPU, no AMP, workers 0, plots
on, no early stopping) and the same OMP_NUM_THREADS (the caller's, else 1: ultralytics sets 1 in
its process on import when it is unset, defectlab leaves it as the user has it); the script
checks that ultralytics' args.yaml of the two runs agree on every training setting. Reported,
medians over the rounds:

* the whole call, wall and CPU seconds of the process (imports excluded, paid before the clock
  starts); CPU time is what the side itself did, little moved by other processes' load;
* ultralytics' training loop: the cumulative ``time`` of the last line of its results.csv
  (every epoch with its validation; for defectlab also its callback after each epoch but the
  last);
* the median epoch, wall and CPU: between two epoch starts of ultralytics' trainer (a callback
  added to its defaults on both sides), so an epoch with its validation and, for defectlab, its
  per-epoch files; the last epoch, which ends in the final evaluation, is left out;
* the ratio ultralytics / defectlab of each (1.0: no overhead; the aim is >= 0.95), and each
  side's final validation mAP@0.5 from its results.csv (they start from different random
  weights, so they agree only roughly).

Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Trainer settings both sides use; defectlab's [train] below says the same in its own words.
EPOCH_SETTINGS = {"optimizer": "AdamW", "lr0": 1e-3, "lrf": 0.01, "cos_lr": True, "weight_decay": 5e-4,
                  "momentum": 0.9, "warmup_epochs": 0, "seed": 0, "deterministic": True, "device": "cpu",
                  "amp": False, "workers": 0, "patience": 0, "plots": True, "val": True, "verbose": False}
#: args.yaml entries that differ by design (paths, the starting file, what defectlab adds to find its run).
NOT_COMPARED = {"data", "model", "pretrained", "project", "name", "save_dir"}


class Clock:
    """Wall and CPU time of this process at each epoch start of ultralytics' trainer (on either side, through
    its default callbacks, which every trainer copies), and of the whole call."""

    def __init__(self) -> None:
        from defectlab_plugins.yolov5.environment import ultralytics_module

        callbacks = ultralytics_module("ultralytics.utils.callbacks").default_callbacks
        self.epochs: list[tuple[float, float]] = []
        callbacks["on_train_epoch_start"].append(lambda trainer: self.epochs.append(self.now()))
        self.started = self.now()

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def result(self) -> dict:
        """Whole call (wall, CPU) and the median epoch (wall, CPU): between epoch starts, so each epoch with its
        validation and, on defectlab's side, its callback; the last epoch (with the final evaluation) left out."""
        end = self.now()
        spans = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.epochs, self.epochs[1:])]
        return {"seconds": end[0] - self.started[0], "cpu": end[1] - self.started[1],
                "epoch": statistics.median(w for w, _ in spans), "epoch_cpu": statistics.median(c for _, c in spans)}


def ultralytics_side(data_yaml: Path, out: Path, epochs: int, size: int, batch: int) -> dict:
    import torch  # noqa: F401  (before ultralytics, as defectlab imports them)
    from defectlab_plugins.yolov5.environment import ultralytics_module

    YOLO = ultralytics_module("ultralytics").YOLO
    clock = Clock()
    YOLO("yolov5n.yaml").train(data=str(data_yaml), epochs=epochs, imgsz=size, batch=batch, project=str(out),
                               name="ultralytics", exist_ok=True, **EPOCH_SETTINGS)
    return {**clock.result(), "folder": str(out / "ultralytics")}


def defectlab_side(data_yaml: Path, out: Path, epochs: int, size: int, batch: int) -> dict:
    import defectlab as dl
    import torch  # noqa: F401
    from defectlab_plugins.yolov5.environment import ultralytics_module

    ultralytics_module("ultralytics")  # imported before the clock starts, as on the other side
    config = {"data": {"dataset": str(data_yaml.parent), "image_size": size, "batch_size": batch, "augment": []},
              "model": {"name": "yolov5", "size": "n"},
              "train": {"epochs": epochs, "optimizer": "adamw", "lr": 1e-3, "min_lr": 1e-5, "schedule": "cosine",
                        "weight_decay": 5e-4, "momentum": 0.9, "warmup_epochs": 0, "seed": 0, "deterministic": True,
                        "device": "cpu", "amp": False, "progress": False}}
    clock = Clock()
    run = dl.train(config, out=out / "defectlab")
    return {**clock.result(), "folder": str(run.folder / "ultralytics"), "test_map_50": run.scores.get("map_50")}


def last_results(folder: Path) -> dict[str, float]:
    with (folder / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key.strip(): float(value) for key, value in rows[-1].items()}


def training_args(folder: Path) -> dict:
    import yaml

    values = yaml.safe_load((folder / "args.yaml").read_text())
    return {k: v for k, v in values.items() if k not in NOT_COMPARED}


def threads() -> str:
    """OMP_NUM_THREADS of both sides' processes: the caller's, else 1, what ultralytics sets on import when it is
    unset (defectlab keeps it unset in its own process; on a busy 2-core machine that alone costs it ~5 %)."""
    return os.environ.get("OMP_NUM_THREADS") or "1"


def run_side(side: str, data_yaml: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--side", side, "--data-yaml", str(data_yaml), "--out", str(out),
               "--epochs", str(args.epochs), "--size", str(args.size), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads()})
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--count", type=int, default=240, help="synthetic_defects images (70 %% train)")
    parser.add_argument("--size", type=int, default=128, help="image side = imgsz")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--side", choices=("ultralytics", "defectlab"), help=argparse.SUPPRESS)
    parser.add_argument("--data-yaml", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one timed training in this fresh process; the result as the last line of stdout
        side = ultralytics_side if args.side == "ultralytics" else defectlab_side
        print(json.dumps(side(args.data_yaml, args.out, args.epochs, args.size, args.batch)))
        return

    import defectlab as dl
    from defectlab import format_table
    from defectlab_plugins.yolov5.environment import offline_environment

    offline_environment()  # one settings folder (and font) for both sides' processes
    root = args.out or Path(tempfile.mkdtemp(prefix="yolo-overhead-"))
    data = dl.convert_dataset({"name": "synthetic_defects", "count": args.count, "size": args.size, "seed": 0},
                              "yolo", root / "data", overwrite=True)
    data_yaml = Path(data) / "data.yaml"
    results: dict[str, list[dict]] = {"ultralytics": [], "defectlab": []}
    for index in range(args.rounds):
        order = ("ultralytics", "defectlab") if index % 2 == 0 else ("defectlab", "ultralytics")
        for side in order:
            result = run_side(side, data_yaml, root / f"round{index + 1}" / side, args)
            folder = Path(result["folder"])
            last = last_results(folder)
            result.update(loop=last["time"], map_50=last["metrics/mAP50(B)"], args=training_args(folder))
            results[side].append(result)
            print(f"round {index + 1} {side}: call {result['seconds']:.1f} s (CPU {result['cpu']:.1f} s), loop "
                  f"{result['loop']:.1f} s, median epoch {result['epoch']:.2f} s (CPU {result['epoch_cpu']:.2f} s), "
                  f"val mAP@0.5 {result['map_50']:.3f}", flush=True)
    differing = {key for a, b in zip(results["ultralytics"], results["defectlab"])
                 for key in set(a["args"]) | set(b["args"]) if a["args"].get(key) != b["args"].get(key)}
    keys = ("seconds", "cpu", "loop", "epoch", "epoch_cpu", "map_50")
    median = {side: {key: statistics.median(r[key] for r in runs) for key in keys} for side, runs in results.items()}
    columns = {"seconds": "call s", "cpu": "call CPU s", "loop": "loop s", "epoch": "epoch s",
               "epoch_cpu": "epoch CPU s", "map_50": "val mAP@0.5"}
    rows = [{"side": side, **{columns[k]: round(m[k], 3) for k in keys}} for side, m in median.items()]
    print()
    print(format_table(["side", *columns.values()], rows))
    ratio = {key: median["ultralytics"][key] / median["defectlab"][key] for key in keys[:-1]}
    print("\nspeed ratio ultralytics / defectlab (aim >= 0.95): " + ", ".join(
        f"{columns[k].removesuffix(' s')} {v:.3f}" for k, v in ratio.items()))
    print(f"training settings that differ between the two args.yaml: {sorted(differing) or 'none'}")
    print(f"{args.rounds} rounds, {args.epochs} epochs, {args.count} images of {args.size} px, batch {args.batch}, "
          f"OMP_NUM_THREADS={threads()}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"runs in {root}")


if __name__ == "__main__":
    main()
