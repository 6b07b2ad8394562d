"""MLflow tracking (`experiment.mlflow`, engine/tracking.py): a tiny run lands in a local store that MLflow reads
back, trains to the numbers of an untracked run, and keeps its config hash; a network stopped by an error and
resumed stays one MLflow run; without mlflow, one line."""
import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line, cli

from reid_kd.config import config_hash
from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine import tracking
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.configs import load_config
from reid_kd.engine.hooks import default_hooks
from reid_kd.engine.member import Member
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.tracking import flat_params, mlflow_run
from reid_kd.models.reid_model import build_model

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def log_rows(folder: Path) -> list[dict]:
    with (folder / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_tracked_run_is_read_back_and_trains_as_an_untracked_one(tmp_path, tiny_overrides, one_thread,
                                                                    monkeypatch, logged):
    mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'reid-kd[mlflow]'")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the run sets it; undone after the test
    out = tmp_path / "runs"
    common = [*tiny_overrides, f"experiment.output_dir={out}", "experiment.threads=1", "distill.method=kd",
              "train.epochs=2"]
    tracked = cli("run", "--config", QUICKSTART, *sets([*common, "experiment.name=tracked", "experiment.mlflow=true"]))
    assert tracked.exit_code == 0, tracked.output
    plain = cli("run", "--config", QUICKSTART, *sets([*common, "experiment.name=plain"]))  # reuses the teacher
    assert plain.exit_code == 0, plain.output
    (tmp_path / "a-file").write_text("")  # a store that cannot be made: tracking stops, the run goes on
    lost = cli("run", "--config", QUICKSTART, *sets([*common, "experiment.name=lost",
                                                     f"experiment.mlflow={tmp_path / 'a-file'}"]))
    assert lost.exit_code == 0, lost.output
    assert [line for line in logged() if line.startswith("MLflow tracking of kd/seed0")]
    folder, other = out / "tracked" / "kd" / "seed0", out / "plain" / "kd" / "seed0"
    record = json.loads((folder / "metrics.json").read_text())
    for run in (other, out / "lost" / "kd" / "seed0"):  # tracking, or its failure, changed no number
        assert record["mAP"] == json.loads((run / "metrics.json").read_text())["mAP"]
    rows = log_rows(folder)
    assert [{k: v for k, v in r.items() if k not in ("seconds", "images_per_sec")} for r in rows] == \
        [{k: v for k, v in r.items() if k not in ("seconds", "images_per_sec")} for r in log_rows(other)]

    mlflow.set_tracking_uri((out / "mlruns").as_uri())  # the default store: <output_dir>/mlruns
    runs = mlflow.search_runs(experiment_names=["tracked"]).set_index("tags.mlflow.runName")
    assert sorted(runs.index)[0] == "kd/seed0" and sorted(runs.index)[1].startswith("teachers/synth_veri-resnet18-")
    run = runs.loc["kd/seed0"]
    cfg = load_config(QUICKSTART, [*common, "experiment.name=tracked", "experiment.mlflow=true"])
    params = {k.removeprefix("params."): v for k, v in run.items() if k.startswith("params.") and isinstance(v, str)}
    assert params == flat_params(cfg) and params["distill.method"] == "kd" and params["train.milestones"] == "[40, 70]"
    assert run["status"] == "FINISHED" and run["tags.reid_kd.config_hash"] == record["config_hash"]
    assert run["metrics.eval/mAP"] == pytest.approx(record["mAP"], abs=1e-12)
    teacher = json.loads((out / "teachers" / runs.index[runs.index != "kd/seed0"][0].split("/")[1] /
                          "metrics.json").read_text())
    assert runs.loc[runs.index != "kd/seed0", "metrics.eval/mAP"].item() == pytest.approx(teacher["mAP"], abs=1e-12)

    client = mlflow.tracking.MlflowClient()
    for name, column in (("loss/total", "loss"), ("loss/kd", "kd"), ("train/lr", "lr")):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run["run_id"], name))
        assert [s for s, _ in history] == [1, 2], name
        assert [v for _, v in history] == pytest.approx([float(r[column]) for r in rows], rel=1e-5), name
    saved = Path(client.download_artifacts(run["run_id"], "metrics.json", str(tmp_path)))
    assert json.loads(saved.read_text()) == record
    # watching a run does not make it another config's run
    assert config_hash(cfg) == config_hash(load_config(QUICKSTART, [*common, "experiment.name=tracked"]))


def test_tracking_uri_of_each_setting(tmp_path):
    cfg = {"experiment": {"mlflow": None, "output_dir": str(tmp_path / "runs")}}
    assert tracking.tracking_uri(cfg) is None
    assert tracking.tracking_uri({"experiment": {**cfg["experiment"], "mlflow": False}}) is None
    assert tracking.tracking_uri({"experiment": {**cfg["experiment"], "mlflow": True}}) == \
        (tmp_path / "runs" / "mlruns").as_uri()
    assert tracking.tracking_uri({"experiment": {**cfg["experiment"], "mlflow": "http://tracker:5000"}}) == \
        "http://tracker:5000"
    assert tracking.tracking_uri({"experiment": {**cfg["experiment"], "mlflow": str(tmp_path / "store")}}) == \
        (tmp_path / "store").as_uri()
    assert load_config(None, ["experiment.mlflow=true"])["experiment"]["mlflow"] is True
    with pytest.raises(Exception, match="experiment.mlflow"):
        load_config(None, ["experiment.mlflow=3"])


def test_without_mlflow_a_tracked_run_stops_in_one_line_before_training(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    out = tmp_path / "runs"
    result = cli("run", "--config", QUICKSTART, *sets([*tiny_overrides, f"experiment.output_dir={out}",
                                                       "experiment.mlflow=true"]))
    assert_one_line(result, "experiment.mlflow", "pip install 'reid-kd[mlflow]'")
    assert not (out / "teachers").exists()


def test_a_network_stopped_by_an_error_is_failed_then_resumed_into_the_same_mlflow_run(tmp_path, tiny_overrides,
                                                                                      one_thread, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'reid-kd[mlflow]'")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "store"
    cfg = load_config(QUICKSTART, [*tiny_overrides, f"experiment.mlflow={store}", "experiment.name=resumed"])
    loaders = build_loaders(cfg["data"], 0)
    step = Member.train_step

    def failing_in_epoch_2(member, *args):
        if member.epoch == 1 and fail:
            raise RuntimeError("a lost node")
        return step(member, *args)

    monkeypatch.setattr(Member, "train_step", failing_in_epoch_2)

    def train() -> Member:
        torch.manual_seed(0)
        model = build_model(cfg["model"], loaders.dataset.num_train_pids)
        cohort = Cohort(loaders.train, torch.device("cpu"), seed=0)
        cohort.add(model, dict(cfg["train"], epochs=2), RunFolder(tmp_path / "run"),
                   hooks=default_hooks(tensorboard=False, mlflow=mlflow_run(cfg, "net/seed0", cfg)))
        cohort.fit()
        return cohort.members[0]

    mlflow.set_tracking_uri(store.as_uri())
    fail = True
    with pytest.raises(RuntimeError, match="a lost node"):
        train()
    assert list(mlflow.search_runs(experiment_names=["resumed"])["status"]) == ["FAILED"]
    fail = False
    train().log_eval({"mAP": 0.25})  # resumed after epoch 1
    runs = mlflow.search_runs(experiment_names=["resumed"])
    assert list(runs["status"]) == ["FINISHED"] and runs["metrics.eval/mAP"].item() == 0.25
    history = mlflow.tracking.MlflowClient().get_metric_history(runs["run_id"].item(), "loss/total")
    assert sorted(m.step for m in history) == [1, 2]
