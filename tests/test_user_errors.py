"""Every mistake a user can fix ends in one line naming the key or file and the fix, exit status 2,
and leaves every earlier result as it was; no data file can run code; no wrong number passes as a result."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import assert_one_line, cli

from reid_kd.bench.board_table import processes
from reid_kd.bench.claims import Claims
from reid_kd.config import dump_config
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import run_dir, teacher_key, teacher_spec
from reid_kd.engine.run_folder import CLAIM

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def snapshot(folder: Path) -> dict[str, str]:
    """Every result file under `folder` by content (lock files record holders, not results)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_overrides):
    """A finished run (teacher cached, baseline student evaluated) whose files no mistake may touch."""
    out = tmp_path_factory.mktemp("finished")
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides += [f"experiment.output_dir={out}", "experiment.name=errors"]
    result = cli("run", "--config", QUICKSTART, *sets(overrides))
    assert result.exit_code == 0, result.output
    return out, overrides


@pytest.fixture(scope="module")
def veri_copy(tmp_path_factory, finished):
    """The tiny synthetic vehicles copied into VeRi-776's folder, to be broken by a test."""
    _, overrides = finished
    data_root = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("data.root=")))
    root = tmp_path_factory.mktemp("veri")
    shutil.copytree(data_root / "synth_veri", root / "VeRi")
    return root


def evil_file(path: Path, sentinel: Path) -> Path:
    """A torch file whose unpickling would create `sentinel`."""
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    torch.save({"model": Payload(), "model_cfg": {}, "num_classes": 1}, path)
    return path


CASES = [  # (name, extra --set overrides or a callable giving CLI args, words the line must hold)
    ("yaml --set", ["train.lr=[1"], ["--set 'train.lr=[1'", "not valid YAML"]),
    ("unknown dataset", ["data.dataset=veri"], ["data.dataset", "veri776"]),
    ("old flat dataset key", ["data.cuhk03_variant=detected"], ["data.cuhk03_variant", "data.cuhk03.variant"]),
    ("option of an unused dataset", ["data.cuhk03.variant=detected"], ["data.cuhk03.variant", "data.dataset=cuhk03"]),
    ("unknown backbone", ["model.backbone=resnet19"], ["model.backbone", "resnet18"]),
    ("P > identities", ["data.batch_p=50"], ["data.batch_p", "at most 8"]),
    ("P of 0", ["data.batch_p=0"], ["data.batch_p", "at least 2"]),
    ("K of 0", ["data.batch_k=0"], ["data.batch_k", "at least 2"]),
    ("negative threads", ["experiment.threads=-1"], ["experiment.threads", "at least 1"]),
    ("max_rank 0", ["eval.max_rank=0"], ["eval.max_rank", "at least 10"]),
    ("max_rank 5", ["eval.max_rank=5"], ["eval.max_rank", "Rank-10"]),
    ("height 0", ["data.height=0"], ["data.height", "at least 16"]),
    ("test batch 0", ["data.test_batch_size=0"], ["data.test_batch_size", "at least 1"]),
    ("negative seed", ["experiment.seed=-3"], ["experiment.seed", "at least 0"]),
    ("student epochs 0", ["train.epochs=0"], ["train.epochs", "at least 1"]),
    ("teacher epochs -1", ["teacher.train.epochs=-1"], ["teacher.train.epochs", "at least 1"]),
    ("lr NaN", ["train.lr=.nan"], ["train.lr", "finite"]),
    ("missing teacher file", ["teacher.checkpoint=/nonexistent/teacher.pt"],
     ["teacher.checkpoint", "/nonexistent/teacher.pt"]),
    ("teacher of another backbone", ["teacher.backbone=resnet34", "teacher.checkpoint={teacher}"],
     ["resnet18 teacher", "teacher.backbone=resnet18"]),
    ("truncated teacher file", ["teacher.checkpoint={truncated}"], ["truncated", "{truncated}"]),
    ("another config in the folder", ["train.lr=0.001"], ["--overwrite", "experiment.name", "another config"]),
    ("output under a file", ["experiment.output_dir={a_file}/runs"],
     ["cannot write into", "experiment.output_dir"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda without CUDA", ["experiment.device=cuda"],
                  ["experiment.device", "auto"]))


@pytest.mark.parametrize("name, extra, words", CASES, ids=[c[0] for c in CASES])
def test_mistake_is_one_line_and_changes_no_result(name, extra, words, finished, tmp_path):
    out, overrides = finished
    teacher = next((out / "teachers").glob("*/teacher.pt"))
    truncated = tmp_path / "teacher.pt"
    truncated.write_bytes(teacher.read_bytes()[:1000])
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    fill = {"teacher": teacher, "truncated": truncated, "a_file": a_file}
    extra = [e.format(**fill) for e in extra]
    if name != "another config in the folder":  # any other mistake, made in a fresh experiment
        extra = ["experiment.name=new", *extra]
    words = [w.format(**fill) for w in words]
    before = snapshot(out)
    result = cli("run", "--config", QUICKSTART, *sets(overrides + extra))
    assert_one_line(result, *words)
    assert snapshot(out) == before


def test_malformed_yaml_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    assert_one_line(cli("run", "--config", bad), str(bad), "not valid YAML", "line 3")


def test_usual_float_spellings_are_accepted():
    cfg = load_config(QUICKSTART, ["train.lr=1e-3", "teacher.train.lr=2.5E-4", "train.weight_decay=5e-4"])
    assert cfg["train"]["lr"] == 1e-3 and cfg["teacher"]["train"]["lr"] == 2.5e-4
    assert cfg["train"]["weight_decay"] == 5e-4


@pytest.mark.slow
def test_debug_shows_the_traceback():
    result = subprocess.run([sys.executable, "-m", "reid_kd.cli", "--debug", "run", "--set", "eval.max_rank=5"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr
    plain = subprocess.run([sys.executable, "-m", "reid_kd.cli", "run", "--set", "eval.max_rank=5"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1


def test_overwrite_replaces_another_configs_run_and_leaves_no_mixed_folder(finished, tmp_path):
    out, overrides = finished
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")] + [f"experiment.output_dir={copy}"]
    old = json.loads((copy / "errors" / "baseline" / "seed0" / "metrics.json").read_text())
    result = cli("run", "--config", QUICKSTART, "--overwrite", *sets(moved + ["train.lr=0.001"]))
    assert result.exit_code == 0, result.output
    cfg = load_config(QUICKSTART, moved + ["train.lr=0.001"])
    folder = run_dir(cfg)
    new = json.loads((folder / "metrics.json").read_text())
    assert new["config_hash"] != old["config_hash"] and "removed the run of another config" in result.output
    assert load_config(None, []) and (folder / "config.yaml").read_text() == dump_config(cfg)
    assert "Queries scored:" in result.output


def test_run_removes_stale_temporaries_and_writes_files_with_normal_permissions(finished, tmp_path):
    out, overrides = finished
    folder = run_dir(load_config(QUICKSTART, overrides))
    stale = folder / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = cli("run", "--config", QUICKSTART, *sets(overrides))  # the same config again: resumes, re-evaluates
    assert result.exit_code == 0, result.output
    assert not stale.exists() and f"removed the stale temporary file {stale}" in result.output
    mask = os.umask(0)
    os.umask(mask)
    for name in ("metrics.json", "student.pt", "config.yaml", "checkpoint.pt"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_missing_image_stops_before_training(finished, veri_copy, tmp_path):
    out, overrides = finished
    root = tmp_path / "data"
    shutil.copytree(veri_copy, root)
    victim = sorted((root / "VeRi" / "image_train").iterdir())[0]
    victim.unlink()
    fresh = tmp_path / "runs"
    moved = [o for o in overrides if not o.startswith(("experiment.output_dir=", "data.root="))]
    line = assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [
        f"experiment.output_dir={fresh}", f"data.root={root}", "data.dataset=veri776"])), "missing", "data check")
    assert victim.name in line
    assert not any(fresh.rglob("*.pt"))  # nothing trained


def test_undecodable_image_met_in_training_is_one_line(finished, veri_copy, tmp_path):
    out, overrides = finished
    root = tmp_path / "data"
    shutil.copytree(veri_copy, root)
    victim = sorted((root / "VeRi" / "image_train").iterdir())[0]
    victim.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    moved = [o for o in overrides if not o.startswith(("experiment.output_dir=", "data.root="))]
    line = assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [
        f"experiment.output_dir={tmp_path / 'runs'}", f"data.root={root}", "data.dataset=veri776"])),
        "cannot be decoded", "data check")
    assert victim.name in line


def test_no_query_with_a_positive_stops_before_training(finished, veri_copy, tmp_path):
    out, overrides = finished
    root = tmp_path / "data"
    shutil.copytree(veri_copy, root)
    gallery = root / "VeRi" / "image_test"
    for name in (root / "VeRi" / "image_query").iterdir():
        for f in gallery.glob(f"{name.name[:4]}_*"):
            f.unlink()  # no gallery image of any query identity remains
    (root / "VeRi" / "name_test.txt").write_text("".join(f.name + "\n" for f in sorted(gallery.iterdir())))
    moved = [o for o in overrides if not o.startswith(("experiment.output_dir=", "data.root="))]
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [
        f"experiment.output_dir={tmp_path / 'runs'}", f"data.root={root}", "data.dataset=veri776"])),
        "no query", "positive")
    assert not any((tmp_path / "runs").rglob("*.pt"))
    student = next(out.rglob("student.pt"))  # scoring a trained student there is refused the same way
    assert_one_line(cli("eval", "--checkpoint", student, "--config", QUICKSTART,
                        *sets(moved + [f"data.root={root}", "data.dataset=veri776"])), "no query", "positive")


def test_a_teacher_trained_before_a_failed_evaluation_is_not_trained_again(finished, monkeypatch, tmp_path):
    import reid_kd.engine.teacher as teacher_mod

    out, overrides = finished
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")] + [f"experiment.output_dir={tmp_path}"]

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    with monkeypatch.context() as m:
        m.setattr(teacher_mod, "evaluate_model", broken)
        assert cli("run", "--config", QUICKSTART, *sets(moved)).exit_code == 1
    assert any(tmp_path.glob("teachers/*/teacher.pt"))
    again = cli("run", "--config", QUICKSTART, *sets(moved))
    assert again.exit_code == 0, again.output
    assert "teacher: resuming" in again.output and "teacher epoch" not in again.output


def test_full_disk_is_refused_before_training(finished, monkeypatch, tmp_path):
    import shutil as shutil_mod
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda _: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    out, overrides = finished
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")]
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [f"experiment.output_dir={tmp_path}"])),
                    "MiB free", "experiment.output_dir")
    assert not any(tmp_path.rglob("*.pt"))


def test_disk_filling_up_during_training_is_one_line(finished, monkeypatch, tmp_path):
    import errno

    def full(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)  # what utils/io.py's save_torch calls
    out, overrides = finished
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")]
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [f"experiment.output_dir={tmp_path}"])),
                    "No space left on device", "checkpoint.pt", "experiment.output_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_is_refused(finished, tmp_path):
    out, overrides = finished
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")]
    try:
        assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved + [f"experiment.output_dir={locked}"])),
                        str(locked), "experiment.output_dir")
    finally:
        locked.chmod(0o755)


def test_unreadable_cached_teacher_metrics_is_named_and_the_teacher_trained_anew_beside_it(finished, tmp_path):
    out, overrides = finished
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    metrics = next((copy / "teachers").glob("*/metrics.json"))
    metrics.write_text('{"mAP": 0.5, ')
    moved = [o for o in overrides if not o.startswith("experiment.output_dir=")] + [
        f"experiment.output_dir={copy}", "experiment.name=other"]
    result = cli("run", "--config", QUICKSTART, *sets(moved))
    assert result.exit_code == 0, result.output
    assert f"teacher cache {metrics.parent}: metrics.json is not readable JSON" in result.stderr
    aside = next(metrics.parent.glob("damaged-*"))  # the damaged files are kept, the teacher trained anew
    assert (aside / "metrics.json").read_text() == '{"mAP": 0.5, ' and f"moved its files to {aside}" in result.stderr
    assert json.loads(metrics.read_text())["epochs"] == 1 and "teacher: training" in result.output


def test_eval_of_a_bad_checkpoint_is_one_line(finished, tmp_path):
    out, overrides = finished
    text = tmp_path / "student.pt"
    text.write_text("hello")
    assert_one_line(cli("eval", "--checkpoint", text, "--config", QUICKSTART, *sets(overrides)),
                    str(text), "not a PyTorch checkpoint")
    assert_one_line(cli("eval", "--checkpoint", tmp_path / "none.pt", "--config", QUICKSTART, *sets(overrides)),
                    "not found")


# --- no code runs from a data file --------------------------------------------------------------

def test_no_load_path_runs_a_pickled_payload(finished, tmp_path):
    """A crafted file given as eval checkpoint, teacher.checkpoint, cached teacher, resume checkpoint or
    pretrained weights is refused, and its payload never runs."""
    out, overrides = finished
    sentinel = tmp_path / "payload-ran"
    evil = evil_file(tmp_path / "evil.pt", sentinel)
    base = [o for o in overrides if not o.startswith("experiment.output_dir=")]
    words = ("not a plain checkpoint", "GLOBAL")

    # eval --checkpoint
    assert_one_line(cli("eval", "--checkpoint", evil, "--config", QUICKSTART, *sets(overrides)), str(evil), *words)
    # teacher.checkpoint
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(base + [
        f"experiment.output_dir={tmp_path / 'a'}", f"teacher.checkpoint={evil}"])), str(evil), *words)
    # pretrained weights of the student
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(base + [
        f"experiment.output_dir={tmp_path / 'b'}", f"model.pretrained={evil}"])), str(evil), *words)
    # the cached teacher
    cached = base + [f"experiment.output_dir={tmp_path / 'c'}"]
    folder = tmp_path / "c" / "teachers" / teacher_key(load_config(QUICKSTART, cached))
    folder.mkdir(parents=True)
    shutil.copy(evil, folder / "teacher.pt")
    (folder / "config.yaml").write_text(dump_config(teacher_spec(load_config(QUICKSTART, cached))))
    (folder / "metrics.json").write_text("{}")
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(cached)), "teacher.pt", *words)
    # resume from the run folder's checkpoint.pt (the teacher comes from the finished run's cache)
    resume = base + [f"experiment.output_dir={tmp_path / 'd'}",
                     f"teacher.checkpoint={next((out / 'teachers').glob('*/teacher.pt'))}"]
    cfg = load_config(QUICKSTART, resume)
    run_dir(cfg).mkdir(parents=True)
    (run_dir(cfg) / "config.yaml").write_text(dump_config(cfg))
    shutil.copy(evil, run_dir(cfg) / "checkpoint.pt")
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(resume)), "checkpoint.pt", *words)
    # the teacher's resume checkpoint in the cache
    partial = base + [f"experiment.output_dir={tmp_path / 'e'}"]
    folder = tmp_path / "e" / "teachers" / teacher_key(load_config(QUICKSTART, partial))
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(teacher_spec(load_config(QUICKSTART, partial))))
    shutil.copy(evil, folder / "checkpoint.pt")
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(partial)), "checkpoint.pt", *words)
    assert not sentinel.exists()


# --- concurrency: a held run folder --------------------------------------------------------------

@pytest.mark.slow
def test_a_second_process_on_a_held_run_folder_stops_at_once(finished, tmp_path):
    out, overrides = finished
    cfg = load_config(QUICKSTART, overrides)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom reid_kd.utils.lock import folder_lock\n"
         f"with folder_lock({str(run_dir(cfg))!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        result = subprocess.run([sys.executable, "-m", "reid_kd.cli", "run", "--config", QUICKSTART,
                                 *sets(overrides)], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and f"pid {holder.pid}" in line and "in use" in line
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    again = cli("run", "--config", QUICKSTART, *sets(overrides))  # the killed holder's lock is taken over
    assert again.exit_code == 0, again.output
    assert f"took over the stale lock of pid {holder.pid}" in again.output


# --- issue 25: suites, tune grids, claims, leaderboard records, data check, launching --------------------

def suite_file(tmp_path: Path, methods: list[dict]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "mini", "base": QUICKSTART, "seeds": [0], "methods": methods}))
    return path


BASELINE = {"name": "baseline", "method": "none"}


def test_suite_entry_that_moves_its_run_folder_is_refused(tmp_path):
    path = suite_file(tmp_path, [BASELINE, {"name": "kd", "method": "kd",
                                            "set": [f"experiment.output_dir={tmp_path / 'elsewhere'}"]}])
    assert_one_line(cli("bench", "--suite", path, "--status"), "methods[1]", "experiment.output_dir",
                    "outside the suite")


@pytest.mark.parametrize("grid", ["distill.kd.weight=1,1", "distill.kd.weight=1,2,1.0"])
def test_tune_refuses_a_repeated_grid_value(grid, tmp_path):
    assert_one_line(cli("tune", "--suite", ROOT / "configs/suites/synth_cpu.yaml", "--grid", grid,
                        "--out", tmp_path / "tables", "--set", f"experiment.output_dir={tmp_path / 'runs'}"),
                    "more than once", grid)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tables").exists()


def test_a_garbage_claim_is_named_and_taken_over_as_stale(tmp_path, caplog):
    path = suite_file(tmp_path, [BASELINE])
    runs = tmp_path / "runs"
    folder = runs / "mini" / "baseline" / "seed0"
    folder.mkdir(parents=True)
    claim = folder / CLAIM
    claim.write_text("{not json at all")
    os.utime(claim, (time.time() - 60, time.time() - 60))
    status = cli("bench", "--suite", path, "--status", "--set", f"experiment.output_dir={runs}")
    assert status.exit_code == 0, status.output
    row = next(line for line in status.stdout.splitlines() if "baseline/seed0" in line)
    assert "stale" in row and f"unreadable claim {claim}" in row
    claims = Claims("w1", timeout=600)
    try:
        assert claims.claim(folder)
    finally:
        claims.close()
    assert f"took over the unreadable claim {claim}" in caplog.text


def leaderboard_runs(tmp_path: Path, suite_text: str, expected: str = "{}", metrics: str | None = None) -> Path:
    suite_dir = tmp_path / "runs" / "mini"
    suite_dir.mkdir(parents=True)
    (suite_dir / "suite.yaml").write_text(suite_text)
    (suite_dir / "expected_runs.json").write_text(expected)
    if metrics is not None:
        (suite_dir / "baseline" / "seed0").mkdir(parents=True)
        (suite_dir / "baseline" / "seed0" / "metrics.json").write_text(metrics)
    return suite_dir


RECORD = yaml.safe_dump({"name": "mini", "seeds": [0], "methods": [BASELINE]})


@pytest.mark.parametrize("suite_text, expected, words", [
    ("name: [mini\n", "{}", ["suite.yaml", "not valid YAML", "reidkd bench"]),
    ("- a list\n", "{}", ["suite.yaml", "reidkd bench"]),
    (RECORD, "[]", ["expected_runs.json", "reidkd bench"]),
], ids=["invalid yaml", "not a mapping", "expected runs a list"])
def test_leaderboard_of_a_damaged_suite_record_is_one_line(tmp_path, suite_text, expected, words):
    suite_dir = leaderboard_runs(tmp_path, suite_text, expected)
    line = assert_one_line(cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "boards",
                               "--readme", tmp_path / "none.md"), *words)
    assert str(suite_dir) in line


def test_leaderboard_rejects_a_metrics_file_that_is_a_list(tmp_path):
    leaderboard_runs(tmp_path, RECORD, json.dumps({"baseline/seed0": {}}), metrics="[1, 2]")
    result = cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "boards", "--readme",
                 tmp_path / "none.md")
    assert result.exit_code == 0, result.output
    assert "mini/baseline/seed0/metrics.json: not a run record" in result.output
    assert "missing (0/1)" in (tmp_path / "boards" / "mini.md").read_text()


def test_leaderboard_shows_runs_of_another_world_size():
    assert processes(pd.DataFrame({"mAP": [0.5]})) == ""  # records from before world size count as one process
    assert processes(pd.DataFrame({"world_size": [1, 1], "sync_bn": [False, False]})) == ""
    assert processes(pd.DataFrame({"world_size": [2, 2], "sync_bn": [True, True]})) == " (2 processes, synced BN)"
    assert processes(pd.DataFrame({"world_size": [1, 2], "sync_bn": [False, False]})) == \
        " (1/2 processes, per-process BN)"


def test_data_check_without_config_reads_and_never_writes(tiny_overrides, tmp_path):
    generated = cli("data", "synth", "--config", QUICKSTART, *sets(tiny_overrides), "--root", tmp_path / "synth_veri")
    assert generated.exit_code == 0, generated.output
    victim = sorted((tmp_path / "synth_veri" / "image_test").iterdir())[0]
    victim.unlink()
    before = snapshot(tmp_path)
    checked = cli("data", "check", "synth_veri", "--root", tmp_path)  # the default spec is not this folder's
    assert checked.exit_code == 1 and "missing" in checked.stdout and victim.name in checked.stdout, checked.output
    assert snapshot(tmp_path) == before


def test_nproc_that_cannot_share_batch_p_stops_before_torchrun(tiny_overrides, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("torchrun was started"))
    assert_one_line(cli("run", "--config", QUICKSTART, "--nproc", "3", *sets(tiny_overrides)),
                    "data.batch_p", "--nproc 3", "multiple of 3")
