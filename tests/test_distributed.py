"""Data-parallel training with torchrun: 2 gloo processes on the CPU against one process on the same global batch."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from reid_kd.utils.io import load_torch

pytestmark = pytest.mark.slow  # torchrun, a rank killed and resumed, gloo processes

ROOT = Path(__file__).resolve().parents[1]
# one P×K batch of 4 identities × 2 images per epoch, so each epoch's log row is one step's losses;
# no augmentation: a rank then sees exactly the images of its share of the single process's batch.
# Plain SGD: the two process groups round their sums differently (~1e-7), and Adam would turn that into
# full-size steps on parameters whose gradient is near zero, so later steps would differ by more than rounding.
TINY = ["data.height=32", "data.width=32", "data.batch_p=4", "data.batch_k=2", "data.pad=0", "data.flip_prob=0",
        "data.synth.train_ids=4", "data.synth.test_ids=6", "data.synth.cameras=4", "data.synth.images_per_id=2",
        "data.synth.image_size=32", "teacher.backbone=resnet18", "teacher.train.epochs=2",
        "model.backbone=mobilenet_v3_small", "experiment.sync_bn=true", "distill.method=gird",
        "distill.gird.memory_size=16", "train.optimizer=sgd", "train.lr=0.01", "teacher.train.optimizer=sgd",
        "teacher.train.lr=0.01"]
# GIRD's options of issue 36 away from their defaults (these count the global batch's columns), in the runs compared
GIRD = ["distill.gird.temperature=1", "distill.gird.teacher_temperature=0.02", "distill.gird.top_k=6",
        "distill.gird.evolution_memory_weight=0.5"]


def reidkd(*args, nproc=1, timeout=600):
    extra = ["--nproc", str(nproc)] if nproc > 1 else []
    return subprocess.run([sys.executable, "-m", "reid_kd", *args, *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory):
    """A run in 2 processes ("ddp") and in 1 ("single"), each training its teacher; and the single-process
    reference of the 2-process student ("reference"), distilled from the teacher the 2 processes trained: two
    teachers trained apart differ by rounding (~1e-5), which GIRD's sharp relations amplify to ~0.4% of its loss."""
    data = tmp_path_factory.mktemp("data")
    runs = {}
    for name, nproc in (("ddp", 2), ("single", 1), ("reference", 1)):
        out = tmp_path_factory.mktemp(name)
        teacher = [f"teacher.checkpoint={next((runs['ddp'][0] / 'teachers').glob('*/teacher.pt'))}"
                   ] if name == "reference" else []
        result = reidkd("run", "--config", "configs/quickstart.yaml",
                        *sets([*TINY, *GIRD, *teacher, f"data.root={data}", f"experiment.output_dir={out}",
                               "train.epochs=3"]), nproc=nproc)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = (out, result)
    return runs


def test_two_gloo_ranks_take_the_single_process_steps(single_and_ddp):
    (one, _), (two, ddp), (ref, _) = (single_and_ddp[n] for n in ("single", "ddp", "reference"))
    assert ddp.stdout.count("gird epoch 3/3") == 1  # rank 0 alone reports
    teacher_logs = [rows(next((out / "teachers").glob("*/log.csv"))) for out in (one, two)]
    student_logs = [rows(out / "quickstart" / "gird" / "seed0" / "log.csv") for out in (ref, two)]
    for want, got in (teacher_logs, student_logs):
        assert len(want) == len(got) > 0
        for a, b in zip(want, got):  # every step's loss terms (one step per epoch), rank 0 logging the global batch
            for key in ("loss", "id", "triplet", "gird_sim", "gird_evo", "acc"):
                if key in a:
                    assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-5), (a["epoch"], key)


def test_every_rank_enqueues_the_global_batch_into_one_gird_memory(single_and_ddp):
    one, two = (single_and_ddp[n][0] / "quickstart" / "gird" / "seed0" / "checkpoint.pt" for n in ("reference", "ddp"))
    want, got = load_torch(one)["distiller"], load_torch(two)["distiller"]
    assert int(want["mem_count"]) == int(got["mem_count"]) == 16 and int(want["mem_ptr"]) == int(got["mem_ptr"])
    assert torch.equal(want["mem_index"], got["mem_index"]) and (want["mem_index"] >= 0).all()
    stored = [key for key in want if key.startswith(("mem_s", "mem_t"))]
    assert stored and set(stored) == {key for key in got if key.startswith(("mem_s", "mem_t"))}
    for key in stored:
        assert want[key].shape[0] == 16 and torch.allclose(want[key], got[key], atol=1e-4), key


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker `rank`, found through /proc (its RANK environment variable)."""
    todo, seen = [launcher], set()
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            todo += [int(c) for c in (task / "children").read_text().split() if int(c) not in seen]
        seen.add(pid)
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and pid != launcher:
            return pid
    return None


def test_resume_after_one_rank_is_killed(tmp_path):
    overrides = [*TINY, f"data.root={tmp_path / 'data'}", f"experiment.output_dir={tmp_path / 'runs'}",
                 "train.epochs=25"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "reid_kd",
               "run", "--config", "configs/quickstart.yaml", *sets(overrides)]
    log = tmp_path / "runs" / "quickstart" / "gird" / "seed0" / "log.csv"
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (log.is_file() and len(rows(log)) >= 2) and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    victim = _rank_pid(launcher.pid, 1)
    assert victim is not None and launcher.poll() is None, "the run ended before rank 1 could be killed"
    os.kill(victim, signal.SIGKILL)
    launcher.communicate(timeout=300)
    assert launcher.returncode != 0
    done = len(rows(log))
    assert 2 <= done < 25

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from checkpoint.pt after epoch" in again.stdout
    epochs = [int(r["epoch"]) for r in rows(log)]
    assert epochs == list(range(1, 26))  # every epoch once: none lost, none repeated
    assert (log.parent / "metrics.json").is_file() and not list(log.parent.glob(".*.tmp"))
    record = json.loads((log.parent / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["sync_bn"] is True  # provenance: 2 processes, BatchNorm synchronised


class _Images(torch.utils.data.Dataset):
    """Item i: an image filled with i, identity 100 + i, camera i % 3 (the loaders' 4-tuple)."""

    def __len__(self):
        return 7  # not a multiple of the 2 ranks: the last shard is shorter

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), 100 + i, i % 3, i


class _Mean(torch.nn.Module):
    def forward(self, images):
        return types.SimpleNamespace(bn_feat=torch.stack([images.mean((1, 2, 3)), torch.ones(len(images))], 1))


def _extract_on_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from reid_kd.evaluation.extract import extract_features

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    loader = torch.utils.data.DataLoader(_Images(), batch_size=2)
    feats, pids, cams = extract_features(_Mean(), loader, torch.device("cpu"))
    if rank == 0:
        torch.save({"feats": torch.from_numpy(feats), "pids": torch.from_numpy(pids), "cams": torch.from_numpy(cams)},
                   out)
    dist.destroy_process_group()


def test_sharded_feature_extraction_returns_dataset_order(tmp_path):
    torch.multiprocessing.spawn(_extract_on_rank, args=(str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2)
    got = torch.load(tmp_path / "out.pt")
    i = torch.arange(7)
    assert torch.equal(got["pids"], 100 + i) and torch.equal(got["cams"], i % 3)
    want = torch.nn.functional.normalize(torch.stack([i.float(), torch.ones(7)], 1), dim=1)
    assert torch.allclose(got["feats"], want)
