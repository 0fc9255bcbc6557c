"""`defectlab tune` on Optuna: a study through the CLI (trials table, best.toml, both plots), pruning that
ends a run as 'pruned', two worker processes on one storage, resuming, every bad input refused before a
trial trains, and (when DEFECTLAB_TEST_POSTGRES_URL names a server, as .ci/run does) a study shared in
PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
import uuid
from pathlib import Path

import defectlab as dl
import pytest
from defectlab.workflows.tune import PruneTrial, Space, parse_space, seconds, within_limit

from tests.tiny_models import write_two_class_folder

optuna = pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parents[1]
LR = "train.lr=log:1e-3:1e-1"


def config(tmp_path: Path, epochs: int = 1) -> Path:
    data = write_two_class_folder(tmp_path / "data")
    path = tmp_path / "base.toml"
    path.write_text(f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8\n[model]\nname = "tiny_cnn"\n'
                    f'[train]\nepochs = {epochs}\nlr = 0.05\nprogress = false\n')
    return path


def run_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_search_spaces_and_times_are_read_as_documented():
    assert parse_space("train.lr", "log:1e-5:1e-2", "w") == Space("train.lr", "log", 1e-5, 1e-2)
    assert parse_space("model.drop_rate", "0:0.5", "w").kind == "float"
    int_space = parse_space("data.batch_size", "int:8:64", "w")
    assert (int_space.kind, int_space.low, int_space.high) == ("int", 8, 64)
    assert parse_space("loss.name", "choice:ce,focal", "w").choices == ("ce", "focal")
    assert parse_space("train.ema", "choice:0.5,true,adamw", "w").choices == (0.5, True, "adamw")
    assert parse_space("loss.name", ["ce", 2], "w").choices == ("ce", 2)
    assert [seconds(v, "t") for v in (90, "90s", "30m", "1.5h", "1d")] == [90, 90, 1800, 5400, 86400]
    with pytest.raises(dl.ParameterError, match="positive time"):
        seconds("1 week", "tune.timeout")
    with pytest.raises(dl.ParameterError, match='write each key whole and in quotes, \\[tune.params\\] "train.lr"'):
        parse_space("train", {"lr": "log:1e-5:1e-2"}, "tune.params.train")


def test_a_trial_takes_a_place_of_the_limit_unless_it_never_trained_or_its_worker_ended():
    study = optuna.create_study()
    trials = [study.ask() for _ in range(4)]  # numbers 0-3, running
    assert [within_limit(study, t, 3) for t in trials] == [True, True, True, False]
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)  # cut off (interrupted, or its heartbeat stopped)
    assert within_limit(study, trials[3], 3)
    trials[2].set_user_attr("error", "the loss became nan")  # failed by its own training: it counts
    study.tell(trials[2], state=optuna.trial.TrialState.FAIL)
    assert within_limit(study, trials[3], 3)
    assert not within_limit(study, study.ask(), 3)  # 0, 2 and 3 hold the places


def test_a_study_of_three_trials_through_the_cli(tiny, tmp_path, run_cli):
    base, out = config(tmp_path), tmp_path / "tune"
    result = run_cli("tune", str(base), "--param", LR, "--param", "model.width=int:4:12", "--param",
                     "train.optimizer=choice:sgd,adamw", "--trials", "3", "--metric", "val/loss", "--direction",
                     "minimize", "--seed", "1",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "tune.json").read_text())
    assert (saved["metric"], saved["direction"], saved["study"]) == ("val/loss", "minimize", "base")
    assert [t["number"] for t in saved["trials"]] == [0, 1, 2]
    assert [t["state"] for t in saved["trials"]] == ["complete"] * 3
    for trial in saved["trials"]:  # each trial is an ordinary run with its own values, scored at its best epoch
        run = dl.Run(trial["folder"])
        assert run.folder == out / f"trial-{trial['number']}" and run.status["status"] == "finished"
        assert run.config["train"]["lr"] == trial["params"]["train.lr"]
        assert run.config["model"]["width"] == trial["params"]["model.width"]
        assert run.config["train"]["optimizer"] == trial["params"]["train.optimizer"]
        assert 1e-3 <= trial["params"]["train.lr"] <= 1e-1 and 4 <= trial["params"]["model.width"] <= 12
        assert (run.config["train"]["monitor"], run.config["train"]["mode"]) == ("val/loss", "auto")  # as configured
        assert trial["value"] == min(r["val/loss"] for r in run_records(run.folder))
        assert trial["epochs"] == 1
    best = min(saved["trials"], key=lambda t: t["value"])
    assert saved["best"]["value"] == best["value"]
    written = tomllib.loads((out / "best.toml").read_text())
    assert "tune" not in written and written["data"]["image_size"] == 16
    assert written["train"]["lr"] == saved["best"]["params"]["train.lr"]
    assert written["model"]["width"] == saved["best"]["params"]["model.width"]
    assert run_cli("validate", str(out / "best.toml")).exit_code == 0
    report = (out / "report.html").read_text()
    assert "history.png" in report and "importance.png" in report
    assert (out / "history.png").stat().st_size > 10_000 and (out / "importance.png").stat().st_size > 10_000
    table = json.loads((out / "comparison.json").read_text())
    assert {"trial", "value", "train.lr", "model.width", "train.optimizer"} <= set(table["columns"])
    lines = result.stdout.splitlines()
    header = ["trial", "state", "value", "train.lr", "model.width", "train.optimizer", "epochs", "run"]
    assert lines[0].split() == header
    assert f"best: trial {saved['best']['number']}" in result.stdout


def test_a_pruned_trial_stops_its_run_after_the_epoch_and_run_json_says_so(tiny, tmp_path):
    class Trial:  # what PruneTrial asks of an Optuna trial
        number, reported = 7, []

        def report(self, value, step):
            self.reported.append((value, step))

        def should_prune(self):
            return True

    trial = Trial()
    run = dl.train(config(tmp_path, epochs=3), out=tmp_path / "run", callbacks=[PruneTrial(trial, "val/loss")])
    records = run_records(run.folder)
    assert [r["epoch"] for r in records] == [1]
    assert trial.reported == [(records[0]["val/loss"], 1)]
    assert run.status["status"] == "pruned" and run.status["epochs_done"] == 1
    assert run.status["message"].startswith("trial 7 pruned after epoch 1: val/loss")
    assert (run.folder / "last.pt").is_file() and (run.folder / "report.html").is_file()
    assert not (run.folder / "eval").exists()  # a pruned trial is not tested
    assert "pruned" in (run.folder / "report.html").read_text()


def test_the_pruner_prunes_poor_trials_and_they_count_as_trials(tiny, tmp_path, monkeypatch):
    class AllButTheFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number > 0

    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: AllButTheFirst())
    result = dl.tune(config(tmp_path, epochs=2), [LR], trials=2, out=tmp_path / "tune")
    assert [t["state"] for t in result.trials] == ["complete", "pruned"]
    for trial in result.trials[1:]:
        status = dl.Run(trial["folder"]).status
        assert (status["status"], status["epochs_done"], trial["epochs"]) == ("pruned", 1, 1)
        assert trial["last"] == run_records(Path(trial["folder"]))[0]["val/loss"] and trial["value"] is None
    assert result.best["number"] == 0 and result.direction == "minimize"  # val/loss, the config's monitor
    assert "pruned" in (tmp_path / "tune" / "report.html").read_text()


def test_failed_trials_are_recorded_and_the_study_still_ends_at_its_limit(tiny, tmp_path, run_cli):
    result = run_cli("tune", str(config(tmp_path)), "--param", "train.lr=choice:1e30", "--trials", "2",
                     "--out", str(tmp_path / "tune"))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert [t["state"] for t in saved["trials"]] == ["fail", "fail"]
    assert all("the loss became" in t["error"] for t in saved["trials"])
    assert saved["best"] is None and not (tmp_path / "tune" / "best.toml").exists()
    assert "no trial has completed" in result.stdout


def test_a_study_run_again_is_continued_up_to_its_trials(tiny, tmp_path):
    base, out = config(tmp_path), tmp_path / "tune"
    first = dl.tune(base, [LR], trials=1, out=out)
    stamps = {t["number"]: (Path(t["folder"]) / "last.pt").stat().st_mtime_ns for t in first.trials}
    same = dl.tune(base, [LR], trials=1, out=out)  # nothing left to do
    assert [t["number"] for t in same.trials] == [0]
    more = dl.tune(base, [LR], trials=2, out=out)
    assert [t["number"] for t in more.trials] == [0, 1] and more.trials[:1] == first.trials
    assert {n: (out / f"trial-{n}" / "last.pt").stat().st_mtime_ns for n in stamps} == stamps
    with pytest.raises(dl.DataError, match="searches another params"):
        dl.tune(base, ["train.lr=log:1e-4:1e-1"], trials=4, out=out)
    with pytest.raises(dl.DataError, match="holds the trials of study 'base'"):
        dl.tune(base, [LR], trials=4, out=out, study="other")


def test_an_interrupted_trial_is_written_down_and_trained_again_by_the_next_run(tiny, tmp_path, monkeypatch):
    import defectlab.workflows.train as training

    def interrupt(trainer, record):
        raise KeyboardInterrupt

    plain = training.train
    monkeypatch.setattr(training, "train", lambda config, **kw: plain(config, **{**kw, "callbacks": [interrupt]}))
    base, out = config(tmp_path), tmp_path / "tune"
    with pytest.raises(dl.TrainingError, match="trial 0 was interrupted .* run the same command again"):
        dl.tune(base, [LR], trials=1, out=out)
    assert [t["state"] for t in json.loads((out / "tune.json").read_text())["trials"]] == ["fail"]
    assert dl.Run(out / "trial-0").status["status"] == "interrupted"
    monkeypatch.setattr(training, "train", plain)
    again = dl.tune(base, [LR], trials=1, out=out)  # the interrupted trial took no place of the limit
    assert [(t["number"], t["state"]) for t in again.trials] == [(0, "fail"), (1, "complete")]


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from defectlab.plugin_system.loading import get_loader
    from tests.tiny_models import TinyModels

    get_loader().add_plugin(TinyModels(), "tiny_models")
    from defectlab.cli.main import main

    main(sys.argv[1:])
""")


@pytest.mark.slow
def test_two_worker_processes_on_one_storage_share_the_trial_limit(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    base, storage = config(tmp_path), f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    workers = [subprocess.Popen([sys.executable, str(script), "tune", str(base), "--param", LR, "--trials", "4",
                                 "--storage", storage, "--study", "shared", "--json", "--out", str(tmp_path / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for name in ("a", "b")]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name="shared", storage=storage)
    trained = [t for t in study.trials if "over_limit" not in t.user_attrs]
    assert sorted(t.number for t in trained) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)
    ran = {name: {int(p.name.split("-")[1]) for p in (tmp_path / name).glob("trial-*")} for name in ("a", "b")}
    assert ran["a"] | ran["b"] == {0, 1, 2, 3} and not ran["a"] & ran["b"]  # every trial trained once, by one worker
    for out, _ in outputs:  # each worker's table shows the whole study
        assert [t["number"] for t in json.loads(out)["trials"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("args, message", [
    (["--param", "train.lrr=log:1e-3:1e-1"], "train.lrr: unknown setting; did you mean 'lr'?"),
    (["--param", "model.widht=int:4:8"], "model.widht: unknown parameter"),
    (["--param", "train.lr=log:0.1:0.01"], "tune.params.train.lr: the range 0.1:0.01 is empty"),
    (["--param", "train.lr=log:0:0.1"], "a log range needs LOW > 0"),
    (["--param", "loss.name=choice:"], "'choice:' names no value"),
    (["--param", "loss.name=choice:cross_entropy,crossentropy"], "unknown loss 'crossentropy'"),
    (["--param", LR, "--metric", "val/macro_f2"], "no evaluator of this config writes 'val/macro_f2'; did you mean "
                                                  "'val/macro_f1'?"),
    (["--param", LR, "--storage", "postgresql://me:secret@127.0.0.1:1/db"],
     "storage 'postgresql://me:***@127.0.0.1:1/db' cannot be reached: connection failed"),
    (["--param", LR, "--timeout", "soon"], "tune.timeout: expected a positive time"),
    ([], "tune.params: no search space"),
])
def test_bad_input_is_one_clear_message_before_any_trial_trains(tiny, tmp_path, run_cli, args, message):
    base = config(tmp_path)
    result = run_cli("tune", str(base), *args, "--out", str(tmp_path / "tune"))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and "secret" not in result.output
    assert not (tmp_path / "tune").exists() and not list(tmp_path.rglob("run.json"))


def test_the_tune_table_of_a_config_is_the_same_search(tiny, tmp_path, run_cli):
    base = config(tmp_path)
    base.write_text(base.read_text() + '[tune]\ntrials = 5\ntimeout = 0.001\nmetric = "val/accuracy"\n'
                                       '[tune.params]\n"train.lr" = "log:1e-3:1e-1"\n"model.width" = [4, 8]\n')
    assert run_cli("validate", str(base)).exit_code == 0  # train validates [tune], and leaves it alone
    result = dl.tune(base, out=tmp_path / "tune")
    assert (result.metric, result.direction, result.keys) == ("val/accuracy", "maximize", ["train.lr", "model.width"])
    assert len(result.trials) == 1 and result.trials[0]["params"]["model.width"] in (4, 8)  # no trial after the timeout
    trained = dl.Run(result.trials[0]["folder"]).config["train"]
    assert (trained["monitor"], trained["mode"]) == ("val/accuracy", "auto")  # best.pt by the metric, higher is better
    base.write_text(base.read_text().replace("trials = 5", "trials = 5\ntimout = 5"))
    bad = run_cli("validate", str(base))
    assert bad.exit_code == 1 and "tune.timout: unknown setting; did you mean 'timeout'?" in bad.output


@pytest.mark.skipif("DEFECTLAB_TEST_POSTGRES_URL" not in os.environ,
                    reason="needs a PostgreSQL server: DEFECTLAB_TEST_POSTGRES_URL (.ci/run starts one)")
def test_a_study_in_postgresql_is_shared_by_workers_with_folders_of_their_own(tiny, tmp_path):
    base, url, name = config(tmp_path), os.environ["DEFECTLAB_TEST_POSTGRES_URL"], f"test-{uuid.uuid4().hex[:8]}"
    first = dl.tune(base, [LR], trials=2, storage=url, study=name, out=tmp_path / "machine-a")
    assert [t["state"] for t in first.trials] == ["complete", "complete"]
    joined = dl.tune(base, [LR], trials=3, storage=url, study=name, out=tmp_path / "machine-b")
    assert [t["number"] for t in joined.trials] == [0, 1, 2]
    assert [Path(t["folder"]).parent.name for t in joined.trials] == ["machine-a", "machine-a", "machine-b"]
    assert not (tmp_path / "machine-b" / "study.db").exists()
    assert optuna.load_study(study_name=name, storage=url).best_value == joined.best["value"]
