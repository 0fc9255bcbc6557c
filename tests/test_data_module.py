"""DataModule: where splits come from, dict batches, skipped images, oversampling, sharding and caching."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab import DataError, DataModule, DefectDataset, Sample
from defectlab.data.data_module import EpochSampler, collate
from defectlab.plugin_system.config import check_settings
from PIL import Image


class ArrayDataset(DefectDataset):
    """Classes of ``counts`` grey images drawn in memory; counts how often an image is decoded."""

    name = "arrays"

    def __init__(self, counts: list[int], size: int = 8) -> None:
        super().__init__()
        self.classes = [f"c{i}" for i in range(len(counts))]
        self.samples = [Sample(key=f"c{label}/{i}", label=label) for label, n in enumerate(counts) for i in range(n)]
        self.size, self.loads = size, Counter()

    def load_image(self, index: int) -> np.ndarray:
        self.loads[index] += 1
        return np.full((self.size, self.size), index % 256, dtype=np.uint8)


class MaskedArrays(ArrayDataset):
    """A segmentation set whose masks are given per sample (to plant wrong sizes and values)."""

    task = "segment"

    def __init__(self, masks: list[np.ndarray]) -> None:
        super().__init__([len(masks)])
        self.classes = ["background", "defect"]
        self.samples = [Sample(key=f"m{i}") for i in range(len(masks))]
        self.masks = masks

    def load_mask(self, index: int) -> np.ndarray:
        return self.masks[index]


def write_png(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """Class folders a/b/c of 10/5/3 grey 8x8 PNGs (the 10/5/3 worked in test_splits)."""
    rng = np.random.default_rng(0)
    for name, n in (("a", 10), ("b", 5), ("c", 3)):
        for i in range(n):
            write_png(tmp_path / "folders" / name / f"{i}.png", rng.integers(0, 256, (8, 8)))
    return tmp_path / "folders"


def every_batch(data: DataModule, split: str) -> list[dict]:
    return list(data.loader(split))


def test_stratified_split_sizes_of_an_image_folder(folders):
    data = DataModule(str(folders), image_size=8)
    assert data.task == "classify" and data.classes == ["a", "b", "c"] and data.num_classes == 3
    assert [data.class_counts(s) for s in ("train", "val", "test")] == [[7, 3, 2], [2, 1, 0], [1, 1, 1]]
    indices = [i for split in data.splits.values() for i in split]
    assert sorted(indices) == list(range(18))  # every sample in exactly one split
    described = data.describe()
    assert described["splits"]["val"]["size"] == 3 and described["splits"]["test"]["class_counts"] == [1, 1, 1]
    assert data.sample_key("train", data.splits["train"][0]).endswith(".png")


def test_batches_have_the_documented_keys_shapes_and_dtypes(folders):
    data = DataModule(str(folders), image_size=6, batch_size=4, eval_batch_size=2)
    batch = next(iter(data.loader("train")))
    assert set(batch) == {"image", "target", "index", "skipped"} and batch["skipped"] == []
    assert batch["image"].shape == (4, 3, 6, 6) and batch["image"].dtype == torch.float32
    assert batch["target"].shape == (4,) and batch["target"].dtype == torch.long
    assert batch["index"].dtype == torch.long
    samples = data.datasets["train"].samples
    assert batch["target"].tolist() == [samples[i].label for i in batch["index"].tolist()]
    val = every_batch(data, "val")
    assert [b["image"].shape[0] for b in val] == [2, 1]
    assert torch.cat([b["index"] for b in val]).tolist() == data.splits["val"]  # in order


def test_a_corrupted_image_is_skipped_and_reported(folders):
    (folders / "a" / "broken.png").write_bytes(b"these bytes are not a PNG")
    data = DataModule(str(folders), split=[1.0, 0.0, 0.0], batch_size=19, augment=[])
    (batch,) = every_batch(data, "train")
    assert [data.sample_key("train", i) for i in batch["skipped"]] == ["a/broken.png"]
    assert batch["image"].shape == (18, 3, 224, 224) and batch["target"].shape == (18,)
    assert sorted(batch["index"].tolist() + batch["skipped"]) == list(range(19))
    assert "a/broken.png" in data.datasets["train"].unreadable
    with pytest.raises(dl.UnreadableImageError, match="broken.png"):
        data.sample("train", batch["skipped"][0])


def test_a_batch_of_only_skipped_images_is_still_well_formed(folders, tmp_path):
    other = tmp_path / "other"
    for name in ("a", "b", "c"):
        write_png(other / name / "0.png", np.zeros((8, 8)))
    (other / "b" / "0.png").write_bytes(b"garbage")
    data = DataModule(str(folders), val=str(other), test=str(other), eval_batch_size=1, image_size=8)
    batches = every_batch(data, "val")
    assert [b["skipped"] for b in batches] == [[], [1], []]
    empty = batches[1]
    assert empty["image"].shape == (0, 3, 8, 8) and empty["image"].dtype == torch.float32
    assert empty["target"].shape == (0,) and empty["target"].dtype == torch.long and empty["index"].shape == (0,)
    masks = collate([(4, None, None)], image_shape=(1, 8, 8), target_shape=(8, 8))
    assert masks["image"].shape == (0, 1, 8, 8) and masks["target"].shape == (0, 8, 8) and masks["skipped"] == [4]


def test_oversampling_evens_out_the_classes():
    data = DataModule(ArrayDataset([90, 10]), split=[1.0, 0.0], balance="oversample", image_size=8)
    assert list(data.splits) == ["train"]  # empty splits are left out: the engine then skips them
    with pytest.raises(dl.ParameterError, match="no split 'val'"):
        data.loader("val")
    sampler, train = data.loader("train").sampler, data.splits["train"]
    labels = data.datasets["train"].samples
    drawn = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn.update(labels[train[p]].label for p in sampler)
    assert sum(drawn.values()) == 4000
    assert 0.4 <= drawn[1] / 4000 <= 0.6
    plain = DataModule(ArrayDataset([90, 10]), split=[1.0, 0.0], image_size=8).loader("train").sampler
    assert sorted(plain) == list(range(100))  # without oversampling: each sample once, 90/10


@pytest.mark.parametrize("balance,shares", [
    ("none", [0.9, 0.1]),
    ("oversample", [0.5, 0.5]),    # 90·(1/90) : 10·(1/10) = 1 : 1
    ("sqrt", [0.75, 0.25]),        # 90/√90 : 10/√10 = √90 : √10 = 3 : 1
])
def test_balance_gives_each_class_its_share_of_an_epoch(balance, shares):
    data = DataModule(ArrayDataset([90, 10]), split=[1.0, 0.0], balance=balance, image_size=8)
    sampler, train = data.loader("train").sampler, data.splits["train"]
    labels = [data.datasets["train"].samples[i].label for i in train]
    if balance != "none":  # the probability of drawing a class is the sum of its samples' weights
        weights = sampler.weights / sampler.weights.sum()
        assert [weights[[lab == c for lab in labels]].sum().item() for c in (0, 1)] == pytest.approx(shares)
    drawn = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn.update(labels[p] for p in sampler)
    assert [drawn[c] / 4000 for c in (0, 1)] == pytest.approx(shares, abs=0.03)  # 4.4σ of 4000 draws at 1/4


@pytest.mark.parametrize("balance", ["oversample", "sqrt"])
def test_oversampling_needs_labels(balance):
    with pytest.raises(DataError, match=f"balance='{balance}' needs a class label per training image"):
        DataModule(dl.open_dataset({"name": "synthetic_cracks", "count": 20, "size": 32, "defect_ratio": 0.01}),
                   balance=balance)


def test_training_order_is_seeded_by_epoch_and_sharded_by_rank():
    ranks = [EpochSampler(7, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert ranks[0].epoch_order() == ranks[1].epoch_order()
    order = ranks[0].epoch_order()
    shards = [list(s) for s in ranks]
    assert len(order) == 8 and order[7] == order[0]  # padded by repeating from the start
    assert [len(s) for s in shards] == [4, 4] and sorted(shards[0] + shards[1]) == sorted(order)
    assert set(shards[0]) | set(shards[1]) == set(range(7))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # disjoint but for the one padding repeat
    ranks[0].set_epoch(3)
    assert ranks[0].epoch_order() != order
    ranks[0].set_epoch(2)
    assert ranks[0].epoch_order() == order


def test_data_module_shards_train_but_not_val(folders):
    data = DataModule(str(folders), batch_size=2, image_size=8)
    shards = [torch.cat([b["index"] for b in data.loader("train", epoch=1, rank=r, world_size=2)]).tolist()
              for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(data.splits["train"])  # 12 samples: no padding
    assert data.loader("val", rank=1, world_size=2) is data.loader("val")
    assert torch.cat([b["index"] for b in data.loader("val")]).tolist() == data.splits["val"]


def test_splits_csv_is_written_then_reused_and_must_match(folders, tmp_path):
    path = tmp_path / "run" / "splits.csv"
    first = DataModule(str(folders), seed=1, splits_csv=str(path))
    assert path.is_file() and len(path.read_text().splitlines()) == 19
    again = DataModule(str(folders), seed=2, splits_csv=str(path))
    assert again.splits == first.splits
    assert DataModule(str(folders), seed=2).splits != first.splits
    write_png(folders / "b" / "new.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match=r"1 sample\(s\) are not in it \(e.g. b/new.png\).*delete the file"):
        DataModule(str(folders), splits_csv=str(path))


def test_label_fraction_subsets_train_only(folders):
    full = DataModule(str(folders), seed=4)
    half = DataModule(str(folders), seed=4, label_fraction=0.5)
    # train 7/3/2 per class -> round half up of 3.5, 1.5, 1 -> 4, 2, 1
    assert half.class_counts("train") == [4, 2, 1]
    assert set(half.splits["train"]) < set(full.splits["train"])
    assert half.splits["val"] == full.splits["val"] and half.splits["test"] == full.splits["test"]


def test_separate_val_and_test_datasets(folders, tmp_path):
    other = tmp_path / "other"
    for name in ("a", "b", "c"):
        write_png(other / name / "0.png", np.zeros((8, 8)))
    both = DataModule(str(folders), val=str(other), test=str(other))
    assert len(both.splits["train"]) == 18 and both.splits["val"] == [0, 1, 2]
    assert both.datasets["val"] is not both.datasets["train"]
    only_val = DataModule(str(folders), val=str(other))  # the rest 70/15 -> train/test by .82/.18
    assert [len(only_val.splits[s]) for s in ("train", "val", "test")] == [15, 3, 3]
    write_png(other / "d" / "0.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="same classes"):
        DataModule(str(folders), val=str(other))


def test_predefined_splits_and_segmentation_batches():
    data = DataModule({"name": "synthetic_cracks", "count": 20, "size": 32, "defect_ratio": 0.01}, image_size=32, batch_size=5)
    assert data.task == "segment" and [len(data.splits[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    batch = next(iter(data.loader("train")))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["target"].shape == (5, 32, 32)
    assert batch["target"].dtype == torch.long and set(batch["target"].unique().tolist()) <= {0, 1}
    assert batch["target"].sum() > 0  # cracks survive augmentation on the mask


def test_image_mask_folder_and_a_mask_value_outside_the_classes(tmp_path):
    root = tmp_path / "seg"
    for i in range(4):
        write_png(root / "images" / f"{i}.png", np.full((10, 12), 100))
        mask = np.zeros((10, 12))
        mask[2:4, 3:6] = 3 if i == 2 else 255
        write_png(root / "masks" / f"{i}.png", mask)
    data = DataModule(str(root), split=[1.0, 0.0], image_size=12, augment=[], batch_size=4)
    with pytest.raises(DataError, match=r"2.png' has values \[3\] outside the 2 classes"):
        data.sample("train", 2)
    with pytest.raises(DataError, match=r"2.png' has values \[3\]"):  # a wrong mask stops training, not skipped
        every_batch(data, "train")
    (root / "masks" / "2.png").unlink()
    write_png(root / "masks" / "2.png", np.zeros((10, 12)))
    (batch,) = every_batch(DataModule(str(root), split=[1.0, 0.0], image_size=12, augment=[], batch_size=4), "train")
    # rows 2-3 of 10 become rows 2, 3, 4 of 12 (row r shows source row floor((r + 0.5) * 10 / 12)):
    # a 3x3 block of 1s in each of the three masks that have a defect (mask 2 is now empty)
    assert batch["skipped"] == [] and batch["target"].sum().item() == 3 * 9


def test_mask_checks_name_the_sample_sizes_and_values():
    masks = [np.zeros((8, 8), np.uint8), np.zeros((6, 8), np.uint8), np.full((8, 8), 3, np.uint8)]
    data = DataModule(MaskedArrays(masks), split=[1.0, 0.0], image_size=8)
    assert data.sample("train", 0)[1].shape == (8, 8)
    with pytest.raises(DataError, match="sample 'm1': the image is 8x8 but its mask is 8x6"):
        data.sample("train", 1)
    with pytest.raises(DataError, match=r"mask 'm2' has values \[3\] outside the 2 classes \(background, defect"):
        data.sample("train", 2)


def test_cache_decodes_each_image_once_over_two_epochs():
    cached = ArrayDataset([6, 4])
    data = DataModule(cached, split=[1.0, 0.0], batch_size=4, image_size=8)
    for epoch in (0, 1):
        assert sum(len(b["index"]) for b in data.loader("train", epoch=epoch)) == 10
    assert cached.loads == Counter({i: 1 for i in range(10)})
    uncached = ArrayDataset([6, 4])
    data = DataModule(uncached, split=[1.0, 0.0], batch_size=4, image_size=8, cache_mb=0)
    for epoch in (0, 1):
        list(data.loader("train", epoch=epoch))
    assert uncached.loads == Counter({i: 2 for i in range(10)})


def test_workers_load_batches_in_other_processes(folders):
    data = DataModule(str(folders), workers=1, batch_size=6, image_size=8)
    loader = data.loader("train")
    assert loader.persistent_workers
    assert sum(len(b["index"]) for b in loader) == 12


def test_settings_are_checked_against_the_signature():
    problems = check_settings({"split": "0.7,0.3", "balance": "oversampel", "augment": ["flip"], "seed": "x"},
                              DataModule, "data")
    assert len(problems) == 2 and "data.balance" in problems[0] and "data.seed" in problems[1]


def test_unsupported_tasks_and_missing_labels():
    keypoints = ArrayDataset([3])
    keypoints.task = "keypoints"
    with pytest.raises(DataError, match="task 'keypoints'"):
        DataModule(keypoints)
    detection = ArrayDataset([3])
    detection.task = "detect"
    with pytest.raises(DataError, match=r"detection needs the boxes .* 3 image\(s\)"):
        DataModule(detection)
    unlabelled = ArrayDataset([3])
    unlabelled.samples = [Sample(key=f"x{i}") for i in range(3)]
    with pytest.raises(DataError, match=r"3 image\(s\) .* have none \(e.g. x0, x1, x2\)"):
        DataModule(unlabelled, task="classify")


def test_format_splits_can_be_set_aside():
    spec = {"name": "synthetic_cracks", "count": 40, "size": 64, "defect_ratio": 0.01}
    own = DataModule(spec, image_size=32)
    assert {k: len(v) for k, v in own.splits.items()} == {"train": 28, "val": 6, "test": 6}  # i % 20: 14/3/3
    mixed = DataModule(spec, image_size=32, format_splits=False, split=[0.5, 0.5])
    assert {k: len(v) for k, v in mixed.splits.items()} == {"train": 20, "test": 20}


def test_a_last_training_batch_of_one_image_is_left_out(two_classes):
    """17 training images in batches of 8: batch norm cannot train on the 17th alone, so it waits an epoch."""
    data = DataModule(two_classes, split=(17 / 40, 23 / 40), image_size=16, batch_size=8)
    assert len(data.splits["train"]) == 17
    assert [len(batch["image"]) for batch in data.loader("train")] == [8, 8]
    assert sum(len(batch["image"]) for batch in data.loader("test")) == 23  # evaluation keeps every image
    even = DataModule(two_classes, split=(18 / 40, 22 / 40), image_size=16, batch_size=8)
    assert [len(batch["image"]) for batch in even.loader("train")] == [8, 8, 2]
