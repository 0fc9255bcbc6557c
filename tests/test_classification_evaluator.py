"""The classification and embeddings evaluators against hand-worked confusion matrices, sklearn,
F1-against-confidence curves counted by hand, and k-NN votes worked out on a line."""

from __future__ import annotations

import csv
import json

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab_plugins.classification_metrics.classification import f1_confidence_curves
from defectlab_plugins.classification_metrics.embeddings import (
    knn_accuracy,
    projection_settings,
    subsample,
)
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score

PNG = b"\x89PNG\r\n\x1a\n"

# --- a hand-worked 3-class example -------------------------------------------------------------
# true:      0 0 0 0 | 1 1 1 | 2 2 2
# predicted: 0 0 0 1 | 1 1 2 | 2 0 0
# confusion (rows true): [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PROBABILITIES = [
    [0.6, 0.2, 0.2], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.3, 0.5, 0.2],
    [0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7],
    [0.2, 0.2, 0.6], [0.8, 0.1, 0.1], [0.45, 0.15, 0.4],
]
CLASSES = ["ok", "scratch", "pit"]
KEYS = [f"img{i}.png" for i in range(10)]


def hand_example(**params):
    evaluator = dl.create("evaluator", "classification", from_logits=False, **params)
    evaluator.setup(classes=CLASSES, class_counts=[40, 30, 30])
    evaluator.update(torch.tensor(PROBABILITIES, dtype=torch.float64), torch.tensor(TRUE), keys=KEYS)
    return evaluator


def test_hand_worked_confusion_matrix_and_scores():
    evaluator = hand_example()
    assert evaluator.details()["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
    scores = evaluator.compute()
    # accuracy (3 + 2 + 1) / 10
    assert scores["accuracy"] == pytest.approx(0.6)
    # recall 3/4, 2/3, 1/3: balanced accuracy = (0.75 + 0.666667 + 0.333333) / 3 = 1.75 / 3
    assert scores["recall/ok"] == pytest.approx(0.75)
    assert scores["recall/scratch"] == pytest.approx(2 / 3)
    assert scores["recall/pit"] == pytest.approx(1 / 3)
    assert scores["balanced_accuracy"] == scores["macro_recall"] == pytest.approx(0.583333, abs=1e-6)
    # precision (column sums 5, 3, 2): 3/5, 2/3, 1/2, macro (0.6 + 0.666667 + 0.5) / 3
    assert scores["precision/ok"] == pytest.approx(0.6)
    assert scores["precision/scratch"] == pytest.approx(2 / 3)
    assert scores["precision/pit"] == pytest.approx(0.5)
    assert scores["macro_precision"] == pytest.approx(0.588889, abs=1e-6)
    # F1 = 2TP / (2TP + FP + FN): 6/9, 4/6, 2/5, macro (0.666667 + 0.666667 + 0.4) / 3
    assert scores["f1/ok"] == pytest.approx(2 / 3)
    assert scores["f1/scratch"] == pytest.approx(2 / 3)
    assert scores["f1/pit"] == pytest.approx(0.4)
    assert scores["macro_f1"] == pytest.approx(0.577778, abs=1e-6)
    assert all(type(value) is float for value in scores.values())
    predicted = np.argmax(PROBABILITIES, 1)
    assert scores["macro_f1"] == pytest.approx(f1_score(TRUE, predicted, average="macro"), abs=1e-6)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(TRUE, predicted), abs=1e-6)


def test_per_class_rows_carry_support():
    rows = hand_example().details()["per_class"]
    assert [(r["class"], r["support"]) for r in rows] == [("ok", 4), ("scratch", 3), ("pit", 3)]
    assert [r["precision"] for r in rows] == pytest.approx([0.6, 2 / 3, 0.5])


def random_batch(seed: int, n: int = 60, k: int = 4):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n,), generator=generator)
    logits = torch.randn(n, k, generator=generator, dtype=torch.float64) + 1.5 * torch.nn.functional.one_hot(target, k)
    return logits, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_agrees_with_sklearn(seed):
    logits, target = random_batch(seed)
    evaluator = dl.create("evaluator", "classification")
    evaluator.update(logits, target)
    scores = evaluator.compute()
    probabilities = logits.softmax(1).numpy()
    expected = [average_precision_score(target.numpy() == c, probabilities[:, c]) for c in range(4)]
    assert [scores[f"ap/{c}"] for c in range(4)] == pytest.approx(expected, abs=1e-6)
    assert scores["map"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_average_precision_with_tied_scores_agrees_with_sklearn():
    probabilities = np.array([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    target = np.array([0, 1, 0, 1, 1, 1])
    evaluator = dl.create("evaluator", "classification", from_logits=False)
    evaluator.update(probabilities, target)
    scores = evaluator.compute()
    for c in range(2):
        assert scores[f"ap/{c}"] == pytest.approx(average_precision_score(target == c, probabilities[:, c]), abs=1e-6)


# --- F1 at its best confidence ----------------------------------------------------------------------
# Two classes, p_1 = [0.9, 0.4, 0.6, 0.1, 0.3] for targets [1, 1, 0, 0, 0], p_0 = 1 − p_1.
# Class 1 (positives 0.9, 0.4; negatives 0.6, 0.1, 0.3), F1 = 2TP / (2TP + FP + FN):
#   t ≤ 0.1: 4/7   (0.1, 0.3]: 4/6   (0.3, 0.4]: 4/5   (0.4, 0.6]: 2/4   (0.6, 0.9]: 2/3   t > 0.9: 0
# Class 0 (positives 0.4, 0.9, 0.7; negatives 0.1, 0.6):
#   t ≤ 0.1: 6/8   (0.1, 0.4]: 6/7   (0.4, 0.6]: 4/6   (0.6, 0.7]: 4/5   (0.7, 0.9]: 2/4   t > 0.9: 0
# Mean: best on (0.3, 0.4]: (4/5 + 6/7) / 2 = 29/35 = 0.828571, first reached at t = 0.301.
P1 = [0.9, 0.4, 0.6, 0.1, 0.3]
BINARY = np.array([[0.1, 0.9], [0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.7, 0.3]])
BINARY_TRUE = np.array([1, 1, 0, 0, 0])


def test_f1_curves_counted_by_hand():
    curves = f1_confidence_curves(BINARY, BINARY_TRUE)
    at = {t: round(t * 1000) for t in (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)}
    assert curves[1, [at[t] for t in at]] == pytest.approx([4 / 7, 4 / 7, 4 / 6, 4 / 5, 2 / 4, 2 / 3, 2 / 3, 0])
    assert curves[0, [at[t] for t in at]] == pytest.approx([6 / 8, 6 / 8, 6 / 7, 6 / 7, 4 / 6, 4 / 5, 2 / 4, 0])


def test_f1_best_and_its_threshold_on_a_binary_example():
    evaluator = dl.create("evaluator", "classification", from_logits=False)
    evaluator.update(BINARY, BINARY_TRUE)
    scores = evaluator.compute()
    assert scores["f1_best"] == pytest.approx(29 / 35)
    assert scores["f1_best_threshold"] == 0.301
    assert evaluator.details()["f1_best_text"] == "0.83@0.301"


def test_f1_best_text_format():
    text = hand_example().details()["f1_best_text"]
    whole, threshold = text.split("@")
    assert len(whole) == 4 and whole[1] == "." and len(threshold) == 5 and threshold[1] == "."
    scores = hand_example().compute()
    assert text == f"{scores['f1_best']:.2f}@{scores['f1_best_threshold']:.3f}"


# --- batches, keys and files --------------------------------------------------------------------------

def test_batching_does_not_change_anything():
    logits, target = random_batch(7, n=41)
    keys = [f"k{i}" for i in range(41)]
    whole = dl.create("evaluator", "classification")
    whole.update(logits, target, keys=keys)
    parts = dl.create("evaluator", "classification")
    for start, stop in ((0, 5), (5, 5), (5, 17), (17, 41)):
        parts.update(logits[start:stop], target[start:stop], keys=keys[start:stop])
    assert parts.compute() == whole.compute()
    assert parts.details() == whole.details()


def test_reset_forgets_everything():
    evaluator = hand_example()
    evaluator.reset()
    with pytest.raises(dl.DataError, match="no sample seen yet"):
        evaluator.compute()
    evaluator.update(torch.tensor([[0.9, 0.05, 0.05]]), torch.tensor([0]))
    assert evaluator.compute()["accuracy"] == 1.0
    assert evaluator.details()["classes"] == CLASSES  # set-up survives a reset


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_write_produces_the_plots_and_tables(tmp_path):
    written = hand_example().write(tmp_path / "val")
    assert set(written) == {"confusion_matrix", "pr_curves", "f1_curve", "misclassified", "per_class"}
    for label in ("confusion_matrix", "pr_curves", "f1_curve"):
        assert written[label] == tmp_path / "val" / f"{label}.png"
        assert written[label].read_bytes()[:8] == PNG
    # indices 3, 6, 8, 9 are the misclassified ones, in the order seen
    assert read_csv(written["misclassified"]) == [
        ["key", "true", "predicted", "confidence", "p_ok", "p_scratch", "p_pit"],
        ["img3.png", "ok", "scratch", "0.5", "0.3", "0.5", "0.2"],
        ["img6.png", "scratch", "pit", "0.7", "0.1", "0.2", "0.7"],
        ["img8.png", "pit", "ok", "0.8", "0.8", "0.1", "0.1"],
        ["img9.png", "pit", "ok", "0.45", "0.45", "0.15", "0.4"],
    ]
    rows = read_csv(written["per_class"])
    assert rows[0] == ["class", "precision", "recall", "f1", "ap", "support"]
    assert [row[:4] + row[5:] for row in rows[1:]] == [
        ["ok", "0.6", "0.75", "0.666667", "4"],
        ["scratch", "0.666667", "0.666667", "0.666667", "3"],
        ["pit", "0.5", "0.333333", "0.4", "3"],
    ]


def test_without_keys_the_running_sample_number_names_a_sample(tmp_path):
    evaluator = dl.create("evaluator", "classification", from_logits=False)
    evaluator.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))  # sample 1 is wrong
    evaluator.update(torch.tensor([[0.3, 0.7], [0.6, 0.4]]), torch.tensor([1, 1]))  # sample 3 is wrong
    rows = read_csv(evaluator.write(tmp_path)["misclassified"])
    assert [row[:4] for row in rows[1:]] == [["1", "0", "1", "0.8"], ["3", "1", "0", "0.6"]]


def test_details_are_json_and_pr_curves_are_thinned():
    logits, target = random_batch(3, n=1000, k=3)
    evaluator = dl.create("evaluator", "classification")
    evaluator.setup(classes=["a", "b", "c"], class_counts=[1, 1, 1])
    evaluator.update(logits, target)
    details = json.loads(json.dumps(evaluator.details(), allow_nan=False))
    assert set(details["pr_curves"]) == {"a", "b", "c"}
    full = evaluator.results.pr_curves
    for name, curve in details["pr_curves"].items():
        assert 100 < len(curve["precision"]) == len(curve["recall"]) <= 200
        assert curve["recall"][0] == full[name][0][0] and curve["recall"][-1] == full[name][0][-1]
        assert curve["ap"] == evaluator.compute()[f"ap/{name}"]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_a_class_missing_from_the_targets_is_left_out_of_the_means():
    # class 2 never occurs but is predicted once: the macro means and mAP average over classes 0 and 1,
    # so balanced accuracy is sklearn's: recall (1 + 1/2) / 2 = 0.75
    probabilities = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    target = np.array([0, 0, 1, 1])
    evaluator = dl.create("evaluator", "classification", from_logits=False)
    evaluator.update(probabilities, target)
    scores = evaluator.compute()
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, probabilities.argmax(1)))
    assert scores["ap/2"] == scores["recall/2"] == scores["precision/2"] == 0.0
    assert scores["map"] == pytest.approx((scores["ap/0"] + scores["ap/1"]) / 2)
    assert list(evaluator.details()["pr_curves"]) == ["0", "1"]


@pytest.mark.parametrize("pred,target,keys,message", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), None, r"shape \(N, K\), got torch.float32 of shape \(4,\)"),
    (torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long), None, r"shape \(N, K\)"),
    (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), None, r"target of shape \(3,\) does not fit pred of "
                                                                 r"shape \(4, 3\): expected .* \(4,\)"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), None, r"class indices in \[0, 3\); found \[3\]"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), None, "integer class indices"),
    (torch.zeros(2, 3), torch.tensor([0, 1]), ["a"], "got 1 keys for a batch of 2 samples"),
    (torch.full((1, 2), float("nan")), torch.tensor([0]), None, "NaN"),
])
def test_bad_data_says_what_was_expected(pred, target, keys, message):
    with pytest.raises(dl.DataError, match=message):
        dl.create("evaluator", "classification").update(pred, target, keys=keys)


def test_class_count_must_stay_the_same():
    evaluator = dl.create("evaluator", "classification")
    evaluator.update(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(dl.DataError, match="has 4 classes but earlier batches had 3"):
        evaluator.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    evaluator = dl.create("evaluator", "classification")
    evaluator.setup(classes=["ok", "ng"], class_counts=[1, 1])
    with pytest.raises(dl.DataError, match="has 3 classes but setup named 2: ok, ng"):
        evaluator.update(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_probabilities_out_of_range_with_from_logits_false():
    with pytest.raises(dl.DataError, match="from_logits=False expects probabilities in"):
        dl.create("evaluator", "classification", from_logits=False).update(torch.tensor([[2.0, -1.0]]),
                                                                           torch.tensor([0]))


def test_logits_go_through_softmax():
    logits = torch.tensor([[0.0, np.log(3)], [np.log(4), 0.0]])  # softmax (0.25, 0.75) and (0.8, 0.2)
    evaluator = dl.create("evaluator", "classification")
    evaluator.update(logits, torch.tensor([0, 0]))
    assert evaluator.results.probabilities == pytest.approx(np.array([[0.25, 0.75], [0.8, 0.2]]))
    assert evaluator.compute()["accuracy"] == 0.5


# --- the embeddings evaluator ------------------------------------------------------------------------

def two_clusters(n=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    target = np.arange(n) % 2
    embeddings = rng.normal(0, 0.3, (n, d)) + 10 * target[:, None]
    return embeddings.astype(np.float32), target


def embeddings_evaluator(embeddings, target, keys=None, **params):
    evaluator = dl.create("evaluator", "embeddings", **params)
    evaluator.update(torch.zeros(len(target), 2), torch.from_numpy(target), embeddings=torch.from_numpy(embeddings),
                     keys=keys)
    return evaluator


def test_separated_clusters_have_knn_accuracy_one():
    assert embeddings_evaluator(*two_clusters()).compute() == {"knn_accuracy": 1.0}


def test_knn_votes_worked_out_on_a_line():
    # points -1 (class 0), 0 (1), 1 (1), 5 (0), 6 (0), k = 2, each point left out of its own vote:
    #   -1: neighbours 0, 1 -> both class 1: wrong
    #    0: neighbours -1 (0) and 1 (1) at distance 1 each: votes and distance sums tie -> lowest class 0: wrong
    #    1: neighbours 0 (1, d 1) and -1 (0, d 2): votes tie, class 1 nearer -> right
    #    5: neighbours 6 (0, d 1) and 1 (1, d 4) -> class 0 nearer: right;  6: 5 (0, d 1), 1 (1, d 5): right
    # accuracy 3/5
    embeddings = np.array([[-1.0], [0.0], [1.0], [5.0], [6.0]], dtype=np.float32)
    target = np.array([0, 1, 1, 0, 0])
    assert knn_accuracy(embeddings, target, 2) == pytest.approx(0.6)
    assert embeddings_evaluator(embeddings, target, neighbours=2).compute()["knn_accuracy"] == pytest.approx(0.6)
    # k = 4 (everyone else votes): -1: 2 to 2, class 1 nearer (1 + 2 < 6 + 7): wrong; 0 and 1: class 0 wins
    # 3 to 1: wrong; 5: 2 to 2, class 0 nearer (1 + 6 < 4 + 5): right; 6: (1 + 7 < 5 + 6): right -> 2/5
    assert knn_accuracy(embeddings, target, 4) == pytest.approx(0.4)
    assert knn_accuracy(embeddings, target, 99) == knn_accuracy(embeddings, target, 4)  # clipped to n − 1


def test_write_saves_a_tsne_map_and_embeddings_that_round_trip(tmp_path):
    embeddings, target = two_clusters(n=30, d=8)
    keys = [f"img{i}.png" for i in range(30)]
    evaluator = dl.create("evaluator", "embeddings", perplexity=5)
    evaluator.setup(classes=["ok", "ng"], class_counts=[15, 15])
    evaluator.update(torch.zeros(10, 2), torch.from_numpy(target[:10]), embeddings=torch.from_numpy(embeddings[:10]),
                     keys=keys[:10])
    evaluator.update(torch.zeros(20, 2), torch.from_numpy(target[10:]), embeddings=torch.from_numpy(embeddings[10:]),
                     keys=keys[10:])
    written = evaluator.write(tmp_path)
    assert written == {"embeddings": tmp_path / "embeddings.npz", "tsne": tmp_path / "tsne.png"}
    assert written["tsne"].read_bytes()[:8] == PNG
    with np.load(written["embeddings"]) as saved:
        assert saved["keys"].tolist() == keys
        assert np.array_equal(saved["targets"], target)
        assert np.array_equal(saved["embeddings"], embeddings)
        assert saved["tsne"].shape == (30, 2) and np.isfinite(saved["tsne"]).all()
        assert saved["tsne_index"].tolist() == list(range(30))


def test_pca_dimension_and_perplexity_are_clipped():
    assert projection_settings(n=30, d=8, pca_dim=50, perplexity=30.0).pca_dim == 8  # D < 50
    assert projection_settings(n=1000, d=768, pca_dim=50, perplexity=30.0).pca_dim == 50
    small = projection_settings(n=5, d=8, pca_dim=50, perplexity=30.0)
    assert (small.pca_dim, small.perplexity) == (4, 3.0)  # n − 1 = 4 components, perplexity below n − 1
    assert small.notes == ("perplexity 30 clipped to 3 for 5 samples",)
    details = embeddings_evaluator(*two_clusters(n=30, d=8)).details()
    assert (details["pca_dim"], details["perplexity"]) == (8, 28.0)
    assert details["notes"] == ["perplexity 30 clipped to 28 for 30 samples"]


def test_a_tiny_set_still_gets_a_map(tmp_path):
    evaluator = embeddings_evaluator(*two_clusters(n=5, d=3))
    assert evaluator.write(tmp_path)["tsne"].read_bytes()[:8] == PNG
    assert evaluator.details()["pca_dim"] == 3


def test_beyond_max_samples_a_stratified_subsample_is_used(tmp_path):
    target = np.array([0] * 75 + [1] * 25)
    chosen, how = subsample(target, 40, seed=0)
    assert len(chosen) == 40 and np.bincount(target[chosen]).tolist() == [30, 10] and "stratified" in how
    assert np.array_equal(chosen, subsample(target, 40, seed=0)[0])  # seeded
    lonely = np.array([0] * 99 + [1])  # a class of one sample cannot be stratified
    assert "random" in subsample(lonely, 40, seed=0)[1]
    rng = np.random.default_rng(1)
    evaluator = embeddings_evaluator(rng.normal(size=(100, 4)).astype(np.float32), target, max_samples=40)
    assert evaluator.details()["used"] == 40
    with np.load(evaluator.write(tmp_path)["embeddings"]) as saved:
        assert saved["embeddings"].shape == (100, 4) and saved["tsne"].shape == (40, 2)
        assert saved["tsne_index"].tolist() == chosen.tolist()
        assert saved["keys"].tolist() == list(range(100))


def test_embeddings_missing_or_misshapen():
    evaluator = dl.create("evaluator", "embeddings")
    with pytest.raises(dl.DataError, match="no forward_features"):
        evaluator.update(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(dl.DataError, match=r"shape \(N, D\)"):
        evaluator.update(torch.zeros(2, 2), torch.tensor([0, 1]), embeddings=torch.zeros(2, 3, 4))
    with pytest.raises(dl.DataError, match=r"target of shape \(2,\) does not fit embeddings of shape \(3, 4\)"):
        evaluator.update(torch.zeros(3, 2), torch.tensor([0, 1]), embeddings=torch.zeros(3, 4))
    with pytest.raises(dl.DataError, match=r"class indices in \[0, 2\); found \[2\]"):
        evaluator.update(torch.zeros(2, 2), torch.tensor([0, 2]), embeddings=torch.zeros(2, 4))
    evaluator.update(torch.zeros(2, 2), torch.tensor([0, 1]), embeddings=torch.zeros(2, 4))
    with pytest.raises(dl.DataError, match="dimension 5 but earlier batches had 4"):
        evaluator.update(torch.zeros(2, 2), torch.tensor([0, 1]), embeddings=torch.zeros(2, 5))


def test_embeddings_bad_parameters():
    with pytest.raises(dl.ParameterError, match=r"evaluator.max_samples: must be >= 2, got 1"):
        dl.create("evaluator", "embeddings", max_samples=1)
    with pytest.raises(dl.ParameterError, match=r"evaluator.perplexity: must be > 0"):
        dl.create("evaluator", "embeddings", perplexity=0)


# --- the registry and the command line ---------------------------------------------------------------

def test_evaluators_are_listed_and_shown(run_cli):
    listed = {c["name"]: c for c in json.loads(run_cli("list", "evaluator", "--json").output)}
    assert listed["classification"]["plugin"] == listed["embeddings"]["plugin"] == "classification_metrics"
    result = run_cli("show", "evaluator", "classification")
    assert result.exit_code == 0 and "from_logits" in result.output and "0.67@0.256" in result.output
    info = json.loads(run_cli("show", "evaluator", "embeddings", "--json").output)
    assert {p["name"]: p["default"] for p in info["parameters"]} == {
        "max_samples": 2000, "pca_dim": 50, "perplexity": 30.0, "neighbours": 5, "seed": 0}
    assert all(p["doc"] for p in info["parameters"])


def test_evaluators_declare_what_they_want():
    assert dl.create("evaluator", "classification").wants == ("keys",)
    assert dl.create("evaluator", "embeddings").wants == ("embeddings", "keys")
