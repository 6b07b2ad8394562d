"""Where networks start: ImageNet weights from torch hub's cache, the `synth` pretraining (cached, reused,
resumed, refused for another spec, disjoint from the benchmark), and what metrics.json records of it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner
from helpers import into_hub_cache

from reid_kd.cli import main
from reid_kd.data import synth
from reid_kd.engine.configs import load_config
from reid_kd.engine.member import Member
from reid_kd.engine.paths import pretrain_dir, pretrain_key
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.run_folder import RunFolderError
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ReIDModel
from reid_kd.models.weights import WeightsUnavailableError, imagenet_file, sha256

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
TINY_PRETRAIN = ["pretrain.synth.train_ids=6", "pretrain.synth.test_ids=3", "pretrain.synth.cameras=4",
                 "pretrain.synth.images_per_id=4", "pretrain.synth.image_size=32", "pretrain.student.epochs=3",
                 "pretrain.teacher.epochs=1"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def tiny(tiny_overrides, out: Path, *extra: str) -> list[str]:
    kept = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    return [*kept, f"experiment.output_dir={out}", *TINY_PRETRAIN, *extra]


def seed_hub_cache(backbone: str) -> dict:
    """A state dict of the right architecture under the file name torchvision's cache uses."""
    torch.manual_seed(3)
    return into_hub_cache(backbone, getattr(torchvision.models, backbone)(weights=None).state_dict())


def test_imagenet_weights_come_from_the_hub_cache(hub):
    state = seed_hub_cache("resnet18")
    model = ReIDModel("resnet18", 5, pretrained="imagenet")
    assert torch.equal(model.stages[0][0].weight, state["conv1.weight"])
    assert torch.equal(model.stages[3][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.start == {"kind": "imagenet", "name": "ResNet18_Weights.IMAGENET1K_V1",
                           "file": "resnet18-f37072fd.pth", "sha256": sha256(hub / "resnet18-f37072fd.pth")}


def test_a_run_records_the_imagenet_weights_it_started_from(hub, tmp_path, tiny_overrides):
    state = seed_hub_cache("mobilenet_v3_small")
    overrides = tiny(tiny_overrides, tmp_path / "runs", "model.pretrained=imagenet")
    result = CliRunner().invoke(main, ["run", "--config", QUICKSTART, *sets(overrides)])
    assert result.exit_code == 0, result.output
    cfg = load_config(QUICKSTART, overrides)
    run = Path(cfg["experiment"]["output_dir"]) / "quickstart" / "baseline" / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["pretrained"]["student"] == {"kind": "imagenet", "name": "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                                               "file": "mobilenet_v3_small-047dcff4.pth",
                                               "sha256": sha256(imagenet_file("mobilenet_v3_small"))}
    assert record["pretrained"]["teacher"] == {"kind": "none"}
    assert torch.load(run / "student.pt", weights_only=True)["start"] == record["pretrained"]["student"]
    assert not torch.equal(torch.load(run / "student.pt", weights_only=True)["model"]["stages.0.0.0.weight"],
                           state["features.0.0.weight"])  # it was fine-tuned from there, not left as it was


def test_offline_and_not_cached_is_one_line_naming_the_file_and_folder(hub, tmp_path, tiny_overrides):
    with pytest.raises(WeightsUnavailableError) as error:
        ReIDModel("resnet18", 5, pretrained="imagenet")
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and f"into {hub}/" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    overrides = tiny(tiny_overrides, tmp_path / "runs", "teacher.pretrained=imagenet")
    result = CliRunner().invoke(main, ["run", "--config", QUICKSTART, *sets(overrides)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "resnet18-f37072fd.pth" in lines[0] and str(hub) in lines[0]


@pytest.mark.slow
def test_synth_pretraining_is_cached_and_reused(tmp_path, tiny_overrides):
    overrides = tiny(tiny_overrides, tmp_path / "runs", "model.pretrained=synth", "teacher.pretrained=synth",
                     "teacher.seed=0")
    first = CliRunner().invoke(main, ["run", "--config", QUICKSTART, *sets(overrides)])
    assert first.exit_code == 0, first.output
    assert "pretraining resnet18 into" in first.output and "pretraining mobilenet_v3_small into" in first.output
    cfg = load_config(QUICKSTART, overrides)
    folder = pretrain_dir(cfg, "model")
    weights = folder / "backbone.pt"
    before = weights.read_bytes()
    pretrained = json.loads((folder / "metrics.json").read_text())
    assert pretrained["train_ids"] == 6 and pretrained["epochs"] == 3 and 0 <= pretrained["mAP"] <= 1
    second = CliRunner().invoke(main, ["run", "--config", QUICKSTART, *sets(overrides),
                                       "--set", "experiment.seed=1"])
    assert second.exit_code == 0, second.output
    assert " into " not in second.output.replace("results in", "")  # no pretraining, no teacher trained
    assert "pretrain mobilenet_v3_small epoch" not in second.output and "teacher: reusing" in second.output
    assert weights.read_bytes() == before
    run = Path(cfg["experiment"]["output_dir"]) / "quickstart" / "baseline" / "seed1"
    record = json.loads((run / "metrics.json").read_text())
    assert record["pretrained"]["student"] == {"kind": "synth", "name": folder.name, "file": str(weights),
                                               "sha256": hashlib.sha256(before).hexdigest()}
    assert record["pretrained"]["teacher"]["kind"] == "synth"
    # the student began from those weights: its first stage holds them before any step
    model = ReIDModel("mobilenet_v3_small", 5, pretrained=str(weights))
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(model.stages[0][0][0].weight, saved["features.0.0.weight"])


@pytest.mark.slow
def test_synth_pretraining_resumes_after_a_kill(tmp_path, tiny_overrides, monkeypatch, logged, caplog):
    overrides = tiny(tiny_overrides, tmp_path / "killed", "model.pretrained=synth")
    cfg = load_config(QUICKSTART, overrides)
    real_save = Member.save_checkpoint

    def die_after_first_epoch(self, epoch):
        real_save(self, epoch)
        raise KeyboardInterrupt  # as a kill right after the checkpoint of epoch 1

    monkeypatch.setattr(Member, "save_checkpoint", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        network_start(cfg, "model", torch.device("cpu"))
    monkeypatch.setattr(Member, "save_checkpoint", real_save)
    folder = pretrain_dir(cfg, "model")
    assert (folder / "checkpoint.pt").is_file() and not (folder / "backbone.pt").exists()
    caplog.clear()
    resumed = network_start(cfg, "model", torch.device("cpu"))
    said = logged()
    assert any("resuming from checkpoint.pt after epoch 1/3" in line for line in said)
    epochs = [line.split(",")[0] for line in (folder / "log.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"] and not (folder / "checkpoint.pt").exists()
    alone_cfg = load_config(QUICKSTART, tiny(tiny_overrides, tmp_path / "alone", "model.pretrained=synth"))
    alone = network_start(alone_cfg, "model", torch.device("cpu"))
    a, b = torch.load(resumed.file, weights_only=True), torch.load(alone.file, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the kill changed nothing


def test_a_cache_holding_another_specs_weights_is_refused(tmp_path, tiny_overrides):
    overrides = tiny(tiny_overrides, tmp_path / "runs", "model.pretrained=synth", "pretrain.student.epochs=1")
    cfg = load_config(QUICKSTART, overrides)
    start = network_start(cfg, "model", torch.device("cpu"))
    record = start.file.parent / "config.yaml"
    spec = yaml.safe_load(record.read_text())
    spec["data"]["synth"]["train_ids"] = 999  # what another spec's weights would say of themselves
    record.write_text(yaml.safe_dump(spec))
    with pytest.raises(RunFolderError, match="another spec.*delete the folder"):
        network_start(cfg, "model", torch.device("cpu"))


def test_the_pretraining_vehicles_are_not_the_benchmarks(tmp_path, tiny_overrides):
    cfg = load_config(QUICKSTART, tiny(tiny_overrides, tmp_path / "runs", "model.pretrained=synth",
                                       f"data.root={tmp_path / 'data'}"))
    bench = synth.generate(tmp_path / "data" / "synth_veri", synth.SynthSpec(**cfg["data"]["synth"]))
    pre = synth.generate(tmp_path / "data" / "pretrain" / "synth_veri", synth.SynthSpec(**cfg["pretrain"]["synth"]))

    def identities(root: Path, seed: int) -> set[str]:
        vids = {int(p.name[:4]) for p in root.rglob("*.jpg")}
        return {json.dumps(synth._identity(seed, vid), sort_keys=True) for vid in vids}

    def images(root: Path) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.jpg")}

    assert cfg["pretrain"]["synth"]["seed"] != cfg["data"]["synth"]["seed"]
    bench_ids = identities(bench, cfg["data"]["synth"]["seed"])
    pre_ids = identities(pre, cfg["pretrain"]["synth"]["seed"])
    assert len(pre_ids) == 9 and len(bench_ids) == 14 and not bench_ids & pre_ids
    assert not images(bench) & images(pre)
    with pytest.raises(ConfigError, match="pretrain.synth.seed.*another seed"):
        load_config(QUICKSTART, ["model.pretrained=synth", "pretrain.synth.seed=0"])


def test_the_pretraining_key_is_the_same_whatever_the_benchmark_datasets_options():
    keys = {pretrain_key(load_config(None, ["model.pretrained=synth", *extra]), "model") for extra in (
        [], ["data.dataset=veri776"], ["data.dataset=vehicleid", "data.vehicleid.test_size=1600"],
        ["data.dataset=custom_csv", "data.custom_csv.path=mine.csv", "data.train_datasets=[msmt17]"])}
    assert len(keys) == 1  # the pretraining reads pretrain.synth's vehicles, never the benchmark's datasets
