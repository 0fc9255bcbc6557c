"""defectlab's patchcore and padim beside anomalib 2.7's PatchcoreModel and PadimModel: same weights, data, settings.

    OMP_NUM_THREADS=1 python benchmarks/anomalib_side_by_side.py [--image-size 128] [--coreset-ratio 0.01]
        [--rounds 3] [--methods patchcore,padim] [--anomalib-venv PATH] [--no-install] [--threads 1]
        [--diagnose] [--out runs/anomalib-side-by-side]

anomalib is not a dependency of defectlab: its half runs in a venv of its own (default
~/.cache/defectlab-bench/anomalib-venv), made on first use with ``python -m venv`` and ``pip
install anomalib==2.7.*`` with torch, torchvision and timm pinned to the versions of defectlab's
venv. Each (side, method, round) is a fresh process of its side's venv (this script again, with
``--side``); the two halves exchange files only: .npy images, one state dict, JSON results.

Data: ELPV's mono-crystalline cells, defectlab's anomaly split (good class '0', train/test
70/30, seed 0, no augmentation, 3 channels, ImageNet normalisation, ``--image-size`` square),
saved once as float32 arrays; both sides fit on the same good training images in the same order
and score the same test images (good and defective) in batches of 32.

Weights: one ResNet-18 built by defectlab with ``torch.manual_seed(0)`` (timm's initialisation,
which zeroes the last BatchNorm scale of every residual block) and saved once; defectlab loads it
through ``weights=<file>``, the anomalib side into ``TimmFeatureExtractor`` (timm's resnet18
with features_only: the same key names, the head and unused stages left out) with
``pre_trained=False``. Both sides report how many tensors equal the file's, and the first round
saves the raw layer maps of 4 test images, compared here.

Settings: PatchCore on layer2 + layer3 (3 x 3 local average), coreset ratio ``--coreset-ratio``,
9 neighbours in the image score's reweighting; PaDiM on layer1-layer3 with 100 random channels.
Everything else is each library's default (see benchmarks/README.md for where they differ by
design). Round r seeds both sides with r (defectlab's ``seed`` option; anomalib's global torch
and numpy generators, which its coreset and channel draw use), so the AUROC columns show what the
randomness alone moves.

Measured per (method, side, round): image AUROC of the test split (scikit-learn's roc_auc_score
here, on both sides' scores), fit seconds (feature extraction included), inference images/s
(maps and scores), the memory bank's rows, peak RSS. Timing ratios are anomalib / defectlab of
the medians over rounds: above 1 means anomalib took longer (fit) or was faster (images/s).
``--diagnose`` then refits anomalib once more per seed, untimed, from the random state of that
seed's timed fit, with defectlab's choices put in one at a time (PatchCore: the border of the
3 x 3 average, then defectlab's memory bank; PaDiM: defectlab's channels, bilinear resize of the
deeper maps, the blur's edges), and prints the AUROC of each step and how far the last step's
scores are from defectlab's. Finished processes are kept in --out (one JSON each, with its job)
and not repeated when the script runs again with the same settings; delete --out to time afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_VENV = Path.home() / ".cache" / "defectlab-bench" / "anomalib-venv"
ANOMALIB = "anomalib==2.7.*"
BATCH = 32
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}


# --- worker side: runs in either venv, so only the standard library at module level ------------

def batches(array: Any) -> Any:
    """Float tensors of BATCH images from a (N, C, H, W) array, in order."""
    import numpy as np
    import torch

    for start in range(0, len(array), BATCH):
        yield torch.from_numpy(np.ascontiguousarray(array[start:start + BATCH]))


def timed(work: Any) -> tuple[Any, float, float]:
    """work()'s result, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def compare_weights(module: Any, weights: dict[str, Any]) -> dict[str, int]:
    """How many of ``module``'s tensors equal the file's (by name), and how many it has, its head left out
    (defectlab's extractor keeps a classifier head that transfer loading skips and no map uses)."""
    import torch

    own = {name: tensor for name, tensor in module.state_dict().items() if not name.startswith("head.")}
    equal = sum(1 for name, tensor in own.items() if name in weights and torch.equal(tensor, weights[name]))
    return {"tensors": len(own), "equal": equal}


def defectlab_side(job: dict[str, Any]) -> dict[str, Any]:
    import defectlab
    import torch

    options: dict[str, Any] = {"name": job["method"], "in_chans": 3, "backbone": "resnet18",
                               "weights": job["weights"], "seed": job["seed"]}
    if job["method"] == "patchcore":
        options.update(layers=["layer2", "layer3"], coreset_ratio=job["coreset_ratio"], neighbours=job["neighbours"])
    else:
        options.update(layers=["layer1", "layer2", "layer3"], feature_dim=job["padim_features"])
    model = defectlab.create("backbone", options).eval()
    weights = torch.load(job["weights"], map_location="cpu")
    info: dict[str, Any] = {"weights": compare_weights(model.extractor, weights)}

    def fit() -> Any:
        return model.fit(batches(job["train"]))

    def infer() -> Any:
        return torch.cat([model(batch)["scores"] for batch in batches(job["test"])])

    with torch.no_grad():
        fitted, info["fit_s"], info["fit_cpu_s"] = timed(fit)
        scores, info["infer_s"], info["infer_cpu_s"] = timed(infer)
        if job.get("maps_file"):
            sample = next(batches(job["test"]))[:4]
            maps = model.extractor.feature_maps(sample, model.layers)
            save_maps(job["maps_file"], dict(zip(model.layers, maps, strict=True)))
    info["memory_bank"] = int(fitted["memory_bank"]) if "memory_bank" in fitted else None
    if job["method"] == "padim":
        info["channels"] = model.channels.tolist()
    if job["method"] == "patchcore":
        torch.save(model.memory_bank, job["bank_file"])  # for anomalib's --diagnose
    info["scores"] = scores.tolist()
    return info


def anomalib_side(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])  # scikit-learn's sample_without_replacement in its random projection
    import anomalib
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    if job["method"] == "patchcore":
        model = PatchcoreModel(layers=["layer2", "layer3"], backbone="resnet18", pre_trained=False,
                               num_neighbors=job["neighbours"])
    else:
        model = PadimModel(backbone="resnet18", layers=["layer1", "layer2", "layer3"], pre_trained=False,
                           n_features=job["padim_features"])
    weights = torch.load(job["weights"], map_location="cpu")
    extractor = model.feature_extractor.feature_extractor  # timm's features_only resnet18
    wanted = extractor.state_dict()
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise SystemExit(f"the state dict lacks {len(missing)} of the extractor's tensors: {missing[:5]}")
    extractor.load_state_dict({name: weights[name] for name in wanted}, strict=True)
    info: dict[str, Any] = {"weights": compare_weights(extractor, weights), "anomalib": anomalib.__version__}

    def fit() -> None:
        model.train()
        for batch in batches(job["train"]):
            model(batch)
        if job["method"] == "patchcore":
            model.subsample_embedding(job["coreset_ratio"])
        else:
            model.fit()
        model.eval()

    def infer() -> Any:
        return torch.cat([model(batch).pred_score.flatten() for batch in batches(job["test"])])

    with torch.no_grad():
        if job.get("diagnose"):  # untimed: the fit's random draws as in the timed run of this seed
            info["diagnosis"] = diagnose_anomalib(model, job, fit, infer)
            return info
        _, info["fit_s"], info["fit_cpu_s"] = timed(fit)
        scores, info["infer_s"], info["infer_cpu_s"] = timed(infer)
        if job.get("maps_file"):
            sample = next(batches(job["test"]))[:4]
            save_maps(job["maps_file"], model.feature_extractor(sample))
    info["memory_bank"] = int(model.memory_bank.shape[0]) if job["method"] == "patchcore" else None
    if job["method"] == "padim":
        info["channels"] = sorted(model.idx.tolist())
    info["scores"] = scores.tolist()
    return info


def diagnose_anomalib(model: Any, job: dict[str, Any], fit: Any, infer: Any) -> dict[str, list[float]]:
    """Variants of anomalib's model, each adding one of defectlab's choices to the previous one: the test
    scores of each, by name. Every refit starts from the random state the timed run's fit started from
    (the model is built the same way after the same seeding), so only the choice changes."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    variants: dict[str, list[float]] = {}
    state = torch.get_rng_state(), np.random.get_state()

    def refit(name: str) -> None:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        fit()
        variants[name] = infer().tolist()

    if job["method"] == "patchcore":
        # defectlab averages each 3 x 3 neighbourhood over the positions inside the map only
        model.feature_pooler = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        refit("+ border average without zero padding")
        model.memory_bank = torch.load(job["bank_file"])
        variants["+ defectlab's memory bank (its coreset)"] = infer().tolist()
        return variants
    refit("as measured (a check that the refit repeats the timed run)")
    model.idx = torch.tensor(job["channels"])
    refit("+ defectlab's 100 channels")

    def bilinear_embedding(features: dict[str, Any]) -> Any:
        first = features[model.layers[0]]
        resized = [F.interpolate(features[layer], size=first.shape[-2:], mode="bilinear", align_corners=False)
                   for layer in model.layers[1:]]
        return torch.cat([first, *resized], dim=1).index_select(1, model.idx)

    model.generate_embedding = bilinear_embedding
    refit("+ bilinear resize of layer2, layer3")
    model.anomaly_map_generator.blur.border_type = "replicate"
    variants["+ blur with replicated edges"] = infer().tolist()
    return variants


def save_maps(path: str, maps: dict[str, Any]) -> None:
    import numpy as np

    np.savez(path, **{name: m.float().numpy() for name, m in maps.items()})


def worker(job: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    job = {**job, "train": np.load(job["train"]), "test": np.load(job["test"])}
    side = defectlab_side if job["side"] == "defectlab" else anomalib_side
    info = side(job)
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info["torch"] = torch.__version__
    Path(job["result"]).write_text(json.dumps(info))


# --- orchestrator: runs in defectlab's venv --------------------------------------------------------

def anomalib_python(venv: Path, install: bool) -> Path:
    """The anomalib venv's interpreter; makes the venv (and installs anomalib) when it is missing or broken."""
    from reference_venv import reference_python  # beside this script

    check = ("import anomalib; from anomalib.models.image.patchcore.torch_model import PatchcoreModel; "
             "from anomalib.models.image.padim.torch_model import PadimModel")
    return reference_python(venv, ANOMALIB, check, install, env=WORKER_ENV)


def prepare(out: Path, image_size: int) -> dict[str, Any]:
    """The arrays both sides read (written once per image size) and the one ResNet-18 state dict."""
    import defectlab as dl
    import numpy as np
    import torch

    folder = out / f"data-{image_size}"
    files = {name: folder / f"{name}.npy" for name in ("train", "test", "labels", "classes")}
    weights = out / "resnet18-seed0.pt"
    names = folder / "class_names.json"
    if not all(path.is_file() for path in [*files.values(), names]):
        folder.mkdir(parents=True, exist_ok=True)
        data = dl.DataModule({"name": "elpv", "cell_type": "mono"}, task="anomaly", good_class="0",
                             image_size=image_size, channels=3, split=(0.7, 0.3), seed=0, augment=(),
                             batch_size=64)
        train = [batch["image"] for batch in data.loader("train")]
        test = list(data.loader("test"))
        np.save(files["train"], torch.cat(train).numpy())
        np.save(files["test"], torch.cat([batch["image"] for batch in test]).numpy())
        np.save(files["labels"], torch.cat([batch["target"]["labels"] for batch in test]).numpy())
        np.save(files["classes"], torch.cat([batch["target"]["classes"] for batch in test]).numpy())
        names.write_text(json.dumps(list(data.datasets["train"].classes)))
    if not weights.is_file():
        torch.manual_seed(0)
        backbone = dl.create("backbone", {"name": "resnet18"}, num_classes=2, in_chans=3)
        torch.save(backbone.state_dict(), weights)
    return {**{name: str(path) for name, path in files.items()}, "weights": str(weights),
            "class_names": str(names)}


def run_worker(python: Path | str, job: dict[str, Any], result: Path) -> dict[str, Any]:
    """The worker's result for ``job``: from ``result`` when a run with the same job finished there, else run."""
    if result.is_file():
        kept = json.loads(result.read_text())
        if kept.get("job") == job:
            return kept
    env = {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"])}
    done = subprocess.run([str(python), __file__, "--side", json.dumps({**job, "result": str(result)})],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        sys.exit(f"{job['side']} {job['method']} seed {job['seed']} failed:\n{done.stderr[-4000:]}")
    info = json.loads(result.read_text())
    info["job"] = job
    result.write_text(json.dumps(info))
    return info


def auroc(labels: Any, scores: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def check_maps(out: Path, method: str) -> float:
    """The largest absolute difference between the two sides' raw layer maps of 4 test images."""
    import numpy as np

    ours, theirs = (np.load(out / f"maps-{side}-{method}.npz") for side in ("defectlab", "anomalib"))
    if set(ours.files) != set(theirs.files):
        sys.exit(f"{method}: the two sides gave maps of layers {ours.files} and {theirs.files}")
    return max(float(np.abs(ours[name] - theirs[name]).max()) for name in ours.files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("runs/anomalib-side-by-side"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--neighbours", type=int, default=9)
    parser.add_argument("--padim-features", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; round r seeds both sides with r")
    parser.add_argument("--methods", default="patchcore,padim")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--anomalib-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--no-install", action="store_true", help="fail instead of making the anomalib venv")
    parser.add_argument("--diagnose", action="store_true",
                        help="after the rounds, refit anomalib (untimed, per seed) with defectlab's choices added "
                             "one by one: PatchCore's border average and memory bank; PaDiM's channels, bilinear "
                             "resize and blur edges")
    args = parser.parse_args()
    if args.side:
        worker(json.loads(args.side))
        return

    import defectlab as dl
    import numpy as np

    python = {"defectlab": sys.executable, "anomalib": anomalib_python(args.anomalib_venv, not args.no_install)}
    args.out.mkdir(parents=True, exist_ok=True)
    files = prepare(args.out, args.image_size)
    labels = np.load(files["labels"])
    n_train = len(np.load(files["train"], mmap_mode="r"))
    print(f"ELPV mono, {args.image_size} px: {n_train} good training cells, {len(labels)} test cells "
          f"({int(labels.sum())} defective); {args.threads} torch thread(s) per side", file=sys.stderr)
    methods = args.methods.split(",")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for method in methods:
            sides = ("defectlab", "anomalib") if round_ % 2 == 0 else ("anomalib", "defectlab")
            for side in sides:
                job = {"side": side, "method": method, "seed": round_, "threads": args.threads,
                       "coreset_ratio": args.coreset_ratio, "neighbours": args.neighbours,
                       "padim_features": args.padim_features, "train": files["train"], "test": files["test"],
                       "weights": files["weights"], "bank_file": str(args.out / f"defectlab-bank-seed{round_}.pt")}
                if round_ == 0:
                    job["maps_file"] = str(args.out / f"maps-{side}-{method}.npz")
                info = run_worker(python[side], job, args.out / f"{method}-{side}-seed{round_}.json")
                info["auroc"] = auroc(labels, info["scores"])
                results.setdefault((method, side), []).append(info)
                print(f"round {round_} {method:9s} {side:9s} AUROC {100 * info['auroc']:.2f}  fit "
                      f"{info['fit_s']:.1f} s  inference {len(labels) / info['infer_s']:.1f} img/s  "
                      f"bank {info['memory_bank']}  weights {info['weights']['equal']}/{info['weights']['tensors']}"
                      f" equal", file=sys.stderr)
    if args.rounds % 2 and args.rounds > 1:
        print("(an odd number of rounds: defectlab ran first once more than anomalib)", file=sys.stderr)
    diagnoses: dict[str, list[dict[str, list[float]]]] = {}
    if args.diagnose:
        for method in methods:
            for round_, ours in enumerate(results[(method, "defectlab")]):
                job = {**ours["job"], "side": "anomalib", "diagnose": True, "channels": ours.get("channels")}
                job.pop("maps_file", None)
                info = run_worker(python["anomalib"], job, args.out / f"{method}-anomalib-seed{round_}-diagnosis.json")
                diagnoses.setdefault(method, []).append(info["diagnosis"])
                print(f"diagnosis {method} seed {round_} done", file=sys.stderr)

    rows, summary = [], {}
    for method in methods:
        ours, theirs = results[(method, "defectlab")], results[(method, "anomalib")]
        a_ours, a_theirs = ([100 * r["auroc"] for r in runs] for runs in (ours, theirs))

        def median(runs: list[dict[str, Any]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        fit_ratio = median(theirs, "fit_s") / median(ours, "fit_s")
        fit_cpu_ratio = median(theirs, "fit_cpu_s") / median(ours, "fit_cpu_s")
        speed_ours, speed_theirs = (len(labels) / median(runs, "infer_s") for runs in (ours, theirs))
        speed_cpu_ratio = median(ours, "infer_cpu_s") / median(theirs, "infer_cpu_s")
        row = {
            "method": method,
            "AUROC defectlab": f"{statistics.mean(a_ours):.2f} ({min(a_ours):.2f}-{max(a_ours):.2f})",
            "AUROC anomalib": f"{statistics.mean(a_theirs):.2f} ({min(a_theirs):.2f}-{max(a_theirs):.2f})",
            "diff (points)": f"{statistics.mean(a_ours) - statistics.mean(a_theirs):+.2f}",
            "fit s d / a": f"{median(ours, 'fit_s'):.1f} / {median(theirs, 'fit_s'):.1f}",
            "fit a/d (CPU)": f"{fit_ratio:.2f} ({fit_cpu_ratio:.2f})",
            "img/s d / a": f"{speed_ours:.1f} / {speed_theirs:.1f}",
            "speed a/d (CPU)": f"{speed_theirs / speed_ours:.2f} ({speed_cpu_ratio:.2f})",
            "bank d / a": f"{ours[0]['memory_bank']} / {theirs[0]['memory_bank']}" if method == "patchcore" else "",
            "peak MiB d / a": f"{median(ours, 'peak_rss_mb'):.0f} / {median(theirs, 'peak_rss_mb'):.0f}",
        }
        rows.append(row)
        summary[method] = {"defectlab": ours, "anomalib": theirs, "row": row,
                           "max_map_difference": check_maps(args.out, method)}
    print(dl.format_table(list(rows[0]), rows))
    print("AUROC: mean over rounds (range), in points; diff = defectlab - anomalib. fit a/d: anomalib's fit "
          "seconds / defectlab's (>1: defectlab faster); speed a/d: anomalib's images/s / defectlab's (<1: "
          "defectlab faster); wall-clock medians over rounds, CPU-time ones in brackets.")
    classes, names = np.load(files["classes"]), json.loads(Path(files["class_names"]).read_text())
    certain = (labels == 0) | (classes == names.index("1"))  # good cells and cells of defect probability 1
    for method in methods:
        sure = [statistics.mean(100 * auroc(labels[certain], np.array(r["scores"])[certain]) for r in runs)
                for runs in (summary[method]["defectlab"], summary[method]["anomalib"])]
        print(f"{method}: AUROC of the probability-1 cells against the good ones (anomaly_elpv.py's auroc/1), "
              f"mean over rounds: defectlab {sure[0]:.2f}, anomalib {sure[1]:.2f}")
        per_seed = [100 * (o["auroc"] - t["auroc"])
                    for o, t in zip(summary[method]["defectlab"], summary[method]["anomalib"], strict=True)]
        print(f"{method}: per-seed AUROC differences {', '.join(f'{d:+.2f}' for d in per_seed)}; raw layer maps "
              f"differ by at most {summary[method]['max_map_difference']:.2e}; weights equal: defectlab "
              f"{ours_equal(summary, method, 'defectlab')}, anomalib {ours_equal(summary, method, 'anomalib')}")
    for method, variants in diagnoses.items():
        print(diagnosis_table(method, summary[method], variants, labels))
    (args.out / "summary.json").write_text(json.dumps(
        {method: {**{side: [{k: v for k, v in r.items() if k != "scores"} for r in summary[method][side]]
                     for side in ("defectlab", "anomalib")}, "row": summary[method]["row"],
                  "max_map_difference": summary[method]["max_map_difference"],
                  "diagnosis_auroc": [{name: auroc(labels, scores) for name, scores in seed.items()}
                                      for seed in diagnoses.get(method, [])]} for method in summary},
        indent=1, default=str))


def ours_equal(summary: dict[str, Any], method: str, side: str) -> str:
    check = summary[method][side][0]["weights"]
    return f"{check['equal']}/{check['tensors']} tensors"


def diagnosis_table(method: str, runs: dict[str, Any], variants: list[dict[str, list[float]]], labels: Any) -> str:
    """AUROC per seed of anomalib, of each --diagnose step, and of defectlab; how far the last step's
    scores are from defectlab's, relative to defectlab's largest."""
    import defectlab as dl
    import numpy as np

    seeds = range(len(variants))
    rows = [["anomalib", *(f"{100 * runs['anomalib'][s]['auroc']:.2f}" for s in seeds)]]
    rows += [[name, *(f"{100 * auroc(labels, variants[s][name]):.2f}" for s in seeds)] for name in variants[0]]
    rows.append(["defectlab", *(f"{100 * runs['defectlab'][s]['auroc']:.2f}" for s in seeds)])
    gaps = []
    for s in seeds:
        ours = np.array(runs["defectlab"][s]["scores"])
        last = np.array(list(variants[s].values())[-1])
        gaps.append(f"{np.abs(last - ours).max() / np.abs(ours).max():.1e}")
    rows.append(["last step's scores vs defectlab's (max rel.)", *gaps])
    if method == "padim":
        rows.append(["channels in common (of 100)",
                     *(str(len(set(runs["defectlab"][s]["channels"]) & set(runs["anomalib"][s]["channels"])))
                       for s in seeds)])
    return f"{method}: anomalib with defectlab's choices put in one by one\n" + dl.format_table(
        [f"{method} step", *(f"seed {s}" for s in seeds)], rows)


if __name__ == "__main__":
    main()
