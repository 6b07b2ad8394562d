"""Suite files: strict parsing with one-line errors, the runs they expand to, what counts as done."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reid_kd.bench.suite_file import load_suite, parse_suite
from reid_kd.config import config_hash, dump_config
from reid_kd.data.image_dataset import build_loaders
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.engine.paths import run_dir, run_state, teacher_key
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.run_folder import RunFolder
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import build_model
from reid_kd.utils.io import UnsafeFileError, remove_stale_temporaries

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def suite(**changes):
    data = {"name": "s", "base": QUICKSTART, "seeds": [0, 1],
            "methods": [{"name": "baseline", "method": "none"}]}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize("changes, words", [
    ({"sedes": [0]}, ["unknown suite key 'sedes'"]),
    ({"seeds": None}, ["missing suite key 'seeds'"]),
    ({"seeds": [0, 0]}, ["'seeds'", "twice"]),
    ({"seeds": "0"}, ["'seeds'", "list"]),
    ({"seeds": [0, -1]}, ["'seeds'"]),
    ({"name": "teachers"}, ["'name'"]),
    ({"name": "summary"}, ["'name'", "teachers, summary"]),
    ({"name": "a/b"}, ["'name'"]),
    ({"report": "best"}, ["'report'", "last"]),
    ({"set": ["train.epochs"]}, ["'set'", "key.path=value"]),
    ({"base": "nowhere.yaml"}, ["'base'", "nowhere.yaml"]),
    ({"methods": [{"name": "kd", "method": "kd"}]}, ["baseline", "method: none"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "baseline", "method": "none"}]},
     ["baseline", "more than once"]),
    ({"methods": [{"name": "baseline", "method": "none", "sett": []}]},
     ["unknown suite key 'methods[0].sett'", "did you mean 'set'"]),
    ({"methods": [{"name": "baseline"}]}, ["missing suite key 'methods[0].method'"]),
    ({"methods": ["baseline"]}, ["'methods[0]'", "mapping"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd", "set": "a=1"}]},
     ["'methods[1].set'", "list"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "x", "method": "kd", "ablation_of": "y"}]},
     ["'ablation_of'", "'y'"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "x", "method": "none", "longer_of": "y"}]},
     ["'longer_of'", "'y'"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd", "longer_of": "baseline"}]},
     ["'longer_of'", "another method", "'none'"]),
    ({"methods": [{"name": "baseline", "method": "none"}, {"name": "a", "method": "not_a_method"},
                  {"name": "b", "method": "nor_this"}]}, ["not registered: nor_this, not_a_method"]),
])
def test_bad_suites_fail_with_one_line_naming_the_key(changes, words):
    with pytest.raises(ConfigError) as e:
        parse_suite(suite(**changes), "suite.yaml")
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_a_run_key_typo_is_caught_before_any_work():
    s = parse_suite(suite(set=["train.epochz=3"]))
    with pytest.raises(ConfigError, match=r"method 'baseline'.*train\.epochz"):
        s.runs()


def test_runs_expand_entries_and_seeds_and_share_one_teacher(tmp_path):
    entries = [{"name": "baseline", "method": "none"}]
    if "gird" in DISTILLERS:
        entries += [{"name": "gird", "method": "gird"},
                    {"name": "gird_no_memory", "method": "gird", "set": ["distill.gird.use_memory=false"],
                     "ablation_of": "gird"}]
    s = parse_suite(suite(methods=entries, set=[f"experiment.output_dir={tmp_path}"]))
    runs = s.runs()
    assert [(e.name, seed) for e, seed, _ in runs] == [(e["name"], k) for k in (0, 1) for e in entries]
    for entry, seed, cfg in runs:
        assert run_dir(cfg) == tmp_path / "s" / entry.name / f"seed{seed}"
        assert cfg["experiment"]["seed"] == seed and cfg["distill"]["method"] == entry.method
    assert len({teacher_key(cfg) for _, _, cfg in runs}) == 1  # one teacher for every seed and method
    if "gird" in DISTILLERS:
        assert runs[2][2]["distill"]["gird"]["use_memory"] is False
        assert runs[1][2]["distill"]["gird"]["use_memory"] is True


def test_teacher_seed_null_keeps_one_teacher_per_experiment_seed(tmp_path):
    from reid_kd.engine.configs import load_config

    a, b = (load_config(QUICKSTART, [f"experiment.seed={k}"]) for k in (0, 1))
    assert teacher_key(a) != teacher_key(b)  # plain `reidkd run`: the teacher follows experiment.seed
    a, b = (load_config(QUICKSTART, [f"experiment.seed={k}", "teacher.seed=0"]) for k in (0, 1))
    assert teacher_key(a) == teacher_key(b)


def test_relative_base_is_read_from_the_suite_folder(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite(base="base.yaml")))
    s = load_suite(tmp_path / "suite.yaml")
    assert s.runs()[0][2]["train"]["epochs"] == 3
    assert s.as_dict()["base"] == "base.yaml"


def test_done_means_metrics_of_the_same_config(tmp_path):
    cfg = parse_suite(suite(set=[f"experiment.output_dir={tmp_path}"])).runs()[0][2]
    out = run_dir(cfg)
    assert run_state(cfg) == "new"
    out.mkdir(parents=True)
    (out / "checkpoint.pt").write_bytes(b"x")
    assert run_state(cfg) == "other"  # a checkpoint of no recorded config is never taken for this one's
    (out / "config.yaml").write_text(dump_config(cfg))
    assert run_state(cfg) == "resume"
    (out / "metrics.json").write_text(json.dumps({"config_hash": config_hash(cfg)}))
    assert run_state(cfg) == "done"
    (out / "metrics.json").write_text(json.dumps({"config_hash": "something-else"}))
    assert run_state(cfg) == "other"  # another config's result never counts (bench refuses it without --overwrite)
    (out / "metrics.json").write_text('{"config_ha')  # cannot happen with atomic writes: named as damaged
    with pytest.raises(UnsafeFileError, match="metrics.json is not readable JSON.*delete it"):
        run_state(cfg)


def test_stale_temporaries_are_removed_and_complete_files_kept(tmp_path):
    (tmp_path / "a" / "seed0").mkdir(parents=True)
    tmp = tmp_path / "a" / "seed0" / ".checkpoint.pt.x1y2.tmp"
    tmp.write_bytes(b"half")
    keep = tmp_path / "a" / "seed0" / "checkpoint.pt"
    keep.write_bytes(b"whole")
    assert remove_stale_temporaries(tmp_path) == [tmp]
    assert not tmp.exists() and keep.exists()


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, tiny_overrides):
    from reid_kd.engine.configs import load_config

    cfg = load_config(QUICKSTART, tiny_overrides)
    loaders = build_loaders(cfg["data"], seed=0)
    model = build_model(cfg["model"], loaders.dataset.num_train_pids)
    cohort = Cohort(loaders.train, torch.device("cpu"))
    first = cohort.add(model, cfg["train"], RunFolder(tmp_path), tag="config-a", hooks=[])
    first.train_seconds = 1.5
    first.save_checkpoint(0)
    same = cohort.add(model, cfg["train"], RunFolder(tmp_path), tag="config-a", hooks=[])
    same.begin(resume=True, stop_after=None)
    assert same.train_seconds == 1.5 and same.start_epoch == 1
    other = cohort.add(model, cfg["train"], RunFolder(tmp_path), tag="config-b", hooks=[])
    other.begin(resume=True, stop_after=None)
    assert other.train_seconds == 0.0 and other.start_epoch == 0
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.slow
def test_bench_names_unregistered_methods_in_one_line(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite(methods=[{"name": "baseline", "method": "none"},
                                                  {"name": "future", "method": "future_method"}])))
    result = subprocess.run([sys.executable, "-m", "reid_kd.cli", "bench", "--suite", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not registered: future_method" in lines[0]


@pytest.mark.parametrize("file, teacher, student, size", [("synth_cpu.yaml", "resnet34", "mobilenet_v3_small", 64),
                                                          ("veri.yaml", "resnet101", "resnet18", 256)])
def test_shipped_suites_run_every_registered_method(file, teacher, student, size):
    s = load_suite(ROOT / "configs" / "suites" / file)
    assert len(s.seeds) >= 3 and s.report == "last"
    main = {e.method for e in s.entries if e.ablation_of is None and e.longer_of is None}
    assert main == {"none", *DISTILLERS}
    ablations = {e.name: e for e in s.entries if e.ablation_of == "gird"}
    assert {a.set[-1] for a in ablations.values()} == {"distill.gird.use_memory=false",
                                                       "distill.gird.use_evolution=false",
                                                       "distill.gird.relation=self"}
    for _, _, cfg in s.runs():  # every run's config is valid
        assert (cfg["teacher"]["backbone"], cfg["model"]["backbone"], cfg["data"]["height"]) == (teacher, student, size)


def test_the_asymmetric_suite_is_synth_cpus_design_with_every_student_in_the_teachers_width():
    asym, sym = (load_suite(ROOT / "configs" / "suites" / f) for f in ("synth_cpu_asym.yaml", "synth_cpu.yaml"))
    assert {e.method for e in asym.entries} == {"none", *DISTILLERS} and asym.seeds == sym.seeds
    first = {e.name: cfg for e, _, cfg in sym.runs()}
    for entry, _, cfg in asym.runs():
        assert cfg["eval"]["protocols"] == ["asymmetric", "symmetric"] and cfg["model"]["embedding_dim"] == 512
        same = first.get(entry.name, first["baseline"])
        for block in ("data", "teacher", "train", "pretrain"):
            assert cfg[block] == same[block], block  # the same data, teacher (one cache) and schedule
    torch.manual_seed(0)
    student, teacher = (build_model(dict(cfg[b], pretrained=None), 10) for b in ("model", "teacher"))
    assert student.retrieval_dim == teacher.retrieval_dim == 512
