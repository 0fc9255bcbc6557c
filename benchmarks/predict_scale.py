"""`defectlab predict` on a folder of 10,000 images against a plain PyTorch loop over the same files (issue 22).

    .venv/bin/python benchmarks/predict_scale.py --out /tmp/predict-scale [--images 10000] [--rounds 3]

Generates ``--images`` 64 x 64 grey PNGs in ten folders and a classifier run (RegNetX-200MF from
timm, one epoch on 32 generated images: speed does not depend on what the weights learnt), then
times, in turns, ``--rounds`` times each, as fresh processes with one torch thread:

* ``defectlab predict RUN IMAGES --batch-size 64``: the CSV appended and flushed batch by batch;
* the reference: a ``torch.utils.data.DataLoader`` over the same files (Pillow decode,
  torchvision's ``to_tensor`` and ``normalize`` with the run's grey mean and std), the same
  model from ``load_trained``, softmax, and ``csv.writer`` rows of the same columns.

Each process is waited for with ``os.wait4``: wall seconds, CPU seconds and peak RSS (the whole
process, imports included; this script itself imports no torch, since a child's peak RSS starts
at its parent's). It prints the medians, the ratios ours / reference, the agreement of the two
CSVs, both sides once more on one folder (a tenth of the images): the peak RSS there against the
whole (memory does not grow with the number of files), and the images per CPU second of the
other nine tenths (start-up left out). Last, a kill-and-resume check: ``defectlab predict`` killed with
SIGKILL half way, then ``--resume``, must give the uninterrupted CSV byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = str(Path(sys.executable).with_name("defectlab"))
FOLDERS = 10
SIZE = 64
BATCH = 64
GREY_MEAN, GREY_STD = 0.449, 0.226  # the run's normalize = 'imagenet' for one channel


def make_images(root: Path, count: int) -> Path:
    """``count`` grey PNGs of SIZE x SIZE in FOLDERS folders (kept when they are there already)."""
    if len(list(root.rglob("*.png"))) == count:
        return root
    rng = np.random.default_rng(0)
    from PIL import Image

    for index in range(count):
        folder = root / f"lot_{index % FOLDERS}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(40 + 170 * index / count, 20, (SIZE, SIZE)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:06d}.png")
    return root


def make_run(out: Path) -> Path:
    """A classifier run trained for one epoch on 2 x 16 generated images, in a process of its own."""
    run = out / "run"
    if not (run / "best.pt").is_file():
        subprocess.run([sys.executable, __file__, "--make-run", str(out)], check=True, stdout=subprocess.DEVNULL)
    return run


def train_run(out: Path) -> None:
    """What :func:`make_run` runs."""
    import defectlab as dl

    data = out / "train-data"
    rng = np.random.default_rng(1)
    from PIL import Image

    for label, mean in (("bright", 190), ("dark", 60)):
        (data / label).mkdir(parents=True, exist_ok=True)
        for index in range(16):
            Image.fromarray(np.clip(rng.normal(mean, 25, (SIZE, SIZE)), 0, 255).astype(np.uint8)).save(
                data / label / f"{index:02d}.png")
    config = {"data": {"dataset": str(data), "image_size": SIZE, "channels": 1, "batch_size": 16},
              "model": {"name": "timm", "model_name": "regnetx_002"}, "train": {"epochs": 1, "progress": False}}
    dl.train(config, out=out / "run", overwrite=True)


def measured(command: list[str], kill_at: tuple[Path, int] | None = None) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MiB) of ``command`` as a fresh process with one thread; with
    ``kill_at`` (csv, lines) it is killed with SIGKILL once the file has that many lines."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_at is not None:
        path, lines = kill_at
        while process.poll() is None and (not path.exists() or path.read_bytes().count(b"\n") < lines):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    errors = process.stderr.read().decode() if process.stderr else ""
    if kill_at is None and status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def reference(run: str, images: str, out: str) -> None:
    """The plain PyTorch loop: DataLoader over the files, the run's model, softmax, csv.writer."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import functional

    import defectlab as dl

    torch.set_num_threads(1)
    trained = dl.load_trained(run)  # the same model and weights; everything after this is plain PyTorch
    files = sorted(Path(images).rglob("*.png"))

    class Files(Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, index: int) -> torch.Tensor:
            with Image.open(files[index]) as image:
                pixels = image.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            return functional.normalize(functional.to_tensor(pixels), [GREY_MEAN], [GREY_STD])

    with open(out, "w", newline="") as handle, torch.no_grad():
        writer = csv.writer(handle)
        writer.writerow(["path", "predicted", "confidence", *[f"p_{c}" for c in trained.classes], "error"])
        done = 0
        for batch in DataLoader(Files(), batch_size=BATCH):
            for path, row in zip(files[done:done + len(batch)], torch.softmax(trained.model(batch), 1).tolist()):
                best = int(np.argmax(row))
                writer.writerow([path, trained.classes[best], f"{row[best]:.6g}", *[f"{p:.6g}" for p in row], ""])
            done += len(batch)


def agreement(ours: Path, theirs: Path) -> tuple[int, int, float]:
    """Rows, rows with the same predicted class, and the largest probability difference of the two CSVs."""
    mine = {row["path"]: row for row in csv.DictReader(ours.open())}
    other = {row["path"]: row for row in csv.DictReader(theirs.open())}
    assert mine.keys() == other.keys(), "the two sides predicted other files"
    same = sum(mine[p]["predicted"] == other[p]["predicted"] for p in mine)
    columns = [c for c in next(iter(mine.values())) if c.startswith("p_")]
    largest = max(abs(float(mine[p][c]) - float(other[p][c])) for p in mine for c in columns)
    return len(mine), same, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict-scale"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", nargs=3, metavar=("RUN", "IMAGES", "CSV"), help=argparse.SUPPRESS)
    parser.add_argument("--make-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        reference(*args.reference)
        return
    if args.make_run:
        train_run(args.make_run)
        return
    images, run = make_images(args.out / "images", args.images), make_run(args.out)
    sides = {"defectlab predict": lambda folder, csv_: [BIN, "predict", str(run), str(folder), "--out", str(csv_),
                                                        "--batch-size", str(BATCH), "--overwrite"],
             "reference loop": lambda folder, csv_: [sys.executable, __file__, "--reference", str(run), str(folder),
                                                     str(csv_)]}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, command in sides.items():
            results[name].append(measured(command(images, args.out / f"{name.split()[0]}.csv")))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", flush=True)
    tenth = {name: measured(command(images / "lot_0", args.out / "tenth.csv")) for name, command in sides.items()}
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu", "rss")}
               for name, runs in results.items()}
    ours, theirs = medians["defectlab predict"], medians["reference loop"]
    print(f"\n{'side':<20} {'images/s':>9} {'wall s':>7} {'CPU s':>7} {'peak RSS MiB':>13}   "
          f"(medians of {args.rounds}, {args.images} images of {SIZE} px, batch {BATCH}, 1 thread)")
    for name, values in medians.items():
        print(f"{name:<20} {args.images / values['wall']:9.1f} {values['wall']:7.1f} {values['cpu']:7.1f} "
              f"{values['rss']:13.0f}")
    rates = [theirs["wall"] / ours["wall"], theirs["cpu"] / ours["cpu"], ours["rss"] / theirs["rss"]]
    per_round = [r["wall"] / o["wall"] for o, r in zip(results["defectlab predict"], results["reference loop"])]
    print(f"ours / reference: images/s {rates[0]:.3f} (rounds {', '.join(f'{x:.3f}' for x in per_round)}), "
          f"per CPU second {rates[1]:.3f}, peak RSS {rates[2]:.3f}")
    rows, same, largest = agreement(args.out / "defectlab.csv", args.out / "reference.csv")
    print(f"agreement: {same}/{rows} predicted classes, largest probability difference {largest:.2g}")
    rest = args.images - args.images // FOLDERS
    marginal = {name: rest / (medians[name]["cpu"] - tenth[name]["cpu"]) for name in sides}
    for name in sides:
        print(f"{name}: peak RSS {tenth[name]['rss']:.0f} MiB on {args.images // FOLDERS} images, "
              f"{medians[name]['rss']:.0f} on {args.images}; {marginal[name]:.1f} images per CPU second on the "
              f"other {rest}")
    print(f"ours / reference on the other {rest}: images per CPU second "
          f"{marginal['defectlab predict'] / marginal['reference loop']:.3f}")
    killed = args.out / "killed.csv"
    command = [BIN, "predict", str(run), str(images), "--out", str(killed), "--batch-size", str(BATCH)]
    for path in (killed, killed.with_name("killed_settings.json")):
        path.unlink(missing_ok=True)
    measured(command, kill_at=(killed, args.images // 2))
    cut = killed.read_bytes().count(b"\n") - 1
    measured(command + ["--resume"])
    same_bytes = killed.read_bytes() == (args.out / "defectlab.csv").read_bytes()
    print(f"killed (SIGKILL) with {cut} rows written, then --resume: the CSV equals the uninterrupted one: "
          f"{same_bytes}")


if __name__ == "__main__":
    main()
