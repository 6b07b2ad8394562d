"""The `reidkd` command line.

Each command imports the heavy layers (torch, OpenCV) inside its body, after its config is read: a
config mistake is told in a tenth of a second. These are the only function-local project imports.
"""
from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
from pathlib import Path

import click

from reid_kd.bench import EXTEND, LAUNCHERS, VALIDATION_FRACTION
from reid_kd.data.catalog import DATASETS, config_options
from reid_kd.deploy import CALIBRATION_IMAGES
from reid_kd.deploy.compared import SELECTIONS, recorded_config, resolve
from reid_kd.distill.catalog import DISTILLERS, describe_methods
from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError, UserError
from reid_kd.models.catalog import describe_backbones
from reid_kd.registry import default_values
from reid_kd.utils.io import file_in_the_way
from reid_kd.utils.logs import quiet_console, setup_logging

OUTPUTS = "reid_kd.outputs"  # click context meta: the options that set where a command writes
DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EROFS: "use a writable disk",
               errno.EACCES: "fix its permissions", errno.EPERM: "fix its permissions"}


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    """(role, backbone, metrics) rows as a markdown table of percentages."""
    from tabulate import tabulate

    body = [[role, backbone, *(f"{100 * m[k]:.2f}" for k in ("mAP", "rank1", "rank5", "rank10", "mINP"))]
            for role, backbone, m in rows]
    return tabulate(body, headers=["Model", "Backbone", "mAP", "Rank-1", "Rank-5", "Rank-10", "mINP"],
                    tablefmt="github")


def queries_line(metrics: dict) -> str:
    """How many queries were scored, and how many were skipped for lack of a positive."""
    from reid_kd.bench.board_text import rerank_said

    total, valid = metrics.get("num_queries"), metrics["num_valid_queries"]
    rerank = rerank_said(metrics.get("rerank"))
    said = f" Re-ranked: {rerank}." if rerank else ""
    if total is None:
        return f"Queries scored: {valid}.{said}"
    return f"Queries scored: {valid} of {total} ({total - valid} skipped: no positive in the gallery).{said}"

def _fail(message: str) -> None:
    """One line on stderr and exit status 2: user errors are not tracebacks."""
    click.echo(f"reidkd: {message}", err=True)
    sys.exit(2)


def user_message(e: BaseException, outputs: dict | None = None) -> str | None:
    """The one line for an error the user can fix, or None for a bug (which keeps its traceback).

    `outputs`: the command's options that set where it writes ({"--png": value}), named in a failed write's line."""
    if isinstance(e, UserError):
        text = str(e)
        if "Original Traceback" in text:  # raised in a DataLoader worker: the original message is last
            text = text.strip().splitlines()[-1].split(": ", 1)[-1]
        return " ".join(text.split())
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        where = e.filename or "the output folder"
        given = [opt for opt, value in (outputs or {}).items() if value and str(where).startswith(str(value))]
        option = (given or list(outputs or {}) or ["experiment.output_dir"])[0]
        return f"cannot write {where}: {e.strerror}; {DISK_ERRORS[e.errno]} or set {option} elsewhere"
    blocker = file_in_the_way(e.filename) if isinstance(e, (NotADirectoryError, FileExistsError)) else None
    if blocker is not None:  # a folder to make where a file stands (run and cache folders: FolderBlockedError)
        given = [opt for opt, value in (outputs or {}).items() if value and str(e.filename).startswith(str(value))]
        return (f"cannot make the folder {e.filename}: {blocker} is a file, not a folder; move that file away"
                + (f" or set {given[0]} elsewhere" if given else ""))
    if isinstance(e, FileNotFoundError):
        return f"file not found: {e.filename or e}"
    return None


def _writes_to(**options) -> None:
    """Record the options that set where this command writes (`out="x"` is --out), for a failed write's line."""
    click.get_current_context().meta[OUTPUTS] = {f"--{k.replace('_', '-')}": v for k, v in options.items()}


class UserErrors(click.Group):
    """Turns the errors a user can fix (bad config, missing data, a folder in use) into one line.

    `reidkd --debug COMMAND` shows their traceback instead.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as e:
            message = None if ctx.params.get("debug") else user_message(e, ctx.meta.get(OUTPUTS))
            if message is None:
                raise
            _fail(message)


@click.group(cls=UserErrors)
@click.option("--debug", is_flag=True,
              help="Show the full traceback of an error instead of one line, and debug lines.")
def main(debug) -> None:
    """reid-kd: knowledge distillation benchmark for re-identification."""
    quiet_console()  # `reidkd run | head` and `> /dev/full` neither fail a run nor print logging errors
    setup_logging(logging.DEBUG if debug else logging.INFO)  # the library's lines, on this console


config_option = click.option("--config", "-c", type=click.Path(dir_okay=False), help="YAML config file.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set train.epochs=5 (repeatable).")


overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Replace a run folder that holds another config's run (otherwise refused).")


@main.command()
@config_option
@set_option
@overwrite_option
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train data-parallel in N processes on this machine (one per GPU, or gloo on CPU) through "
                   "torchrun; data.batch_p must be a multiple of N.")
@click.pass_context
def run(ctx, config, overrides, overwrite, nproc) -> None:
    """Train (or reuse) the teacher, train the student, evaluate both."""
    cfg = load_config(config, overrides)  # first: a config mistake is told before the heavy imports
    if nproc is not None and nproc > 1:
        if cfg["data"]["batch_p"] % nproc:  # told once here, not by every process torchrun starts
            raise ConfigError(f"config key 'data.batch_p' is {cfg['data']['batch_p']}, which --nproc {nproc} "
                              f"processes cannot share by whole identities; set data.batch_p to a multiple of {nproc}")
        sys.exit(_torchrun(nproc, config, overrides, overwrite, ctx.parent.params.get("debug")))
    from reid_kd.engine.run import run_experiment
    from reid_kd.utils import distributed

    teacher_metrics, record = run_experiment(cfg, overwrite=overwrite)
    if not distributed.is_main():
        return
    click.echo("")
    click.echo(markdown_table([("teacher", record["teacher_backbone"], teacher_metrics), *student_rows(record)]))
    click.echo(queries_line(record))
    for name, m in record["protocols"].items():
        if "skipped" in m:
            click.echo(f"{name} protocol not scored: {m['skipped']}")


def student_rows(record: dict) -> list[tuple[str, str, dict]]:
    """The student's row, or one per protocol of `eval.protocols` scored when it is not symmetric alone."""
    protocols = record["protocols"]
    if list(protocols) == ["symmetric"]:
        return [(f"student ({record['method']})", record["student_backbone"], record)]
    return [(f"student ({record['method']}, {name})", record["student_backbone"], m) for name, m in protocols.items()
            if "skipped" not in m]


def _torchrun(nproc: int, config, overrides, overwrite: bool, debug: bool) -> int:
    """`reidkd run` again in `nproc` processes started by torchrun on this machine; its exit status."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "reid_kd", *(["--debug"] if debug else []), "run"]
    args += ["--config", config] if config else []
    args += [a for o in overrides for a in ("--set", o)] + (["--overwrite"] if overwrite else [])
    return subprocess.run(args).returncode


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="student.pt or teacher.pt, or a model exported by reidkd export / quantize (.onnx, float or INT8: "
                   "run by ONNX Runtime on the CPU).")
@config_option
@set_option
@click.option("--visualize", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also write N queries' top-10 ranked lists as PNG (green: same id, red: not).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of the --visualize PNGs (default: ranked_lists/ beside the checkpoint).")
def eval_cmd(checkpoint, config, overrides, visualize, out) -> None:
    """Evaluate a saved model on the config's dataset (exact mAP, CMC, mINP; eval.rerank for re-ranking)."""
    cfg = load_config(config, overrides)
    _writes_to(out=out)
    from reid_kd.data.image_dataset import build_loaders
    from reid_kd.deploy.onnx_model import OnnxModel, is_onnx
    from reid_kd.engine.preflight import check_positives
    from reid_kd.engine.runtime import setup_runtime
    from reid_kd.evaluation import evaluate_model
    from reid_kd.models.checkpoint import input_config, load_model

    if not Path(checkpoint).is_file():
        _fail(f"checkpoint not found: {checkpoint}")
    device = setup_runtime(cfg)
    model = OnnxModel(checkpoint) if is_onnx(checkpoint) else load_model(checkpoint, device)
    data = input_config(model, cfg["data"])  # the size it was trained on, as `reidkd index` scores it
    if (data["height"], data["width"]) != (cfg["data"]["height"], cfg["data"]["width"]):
        click.echo(f"{Path(checkpoint).name} was trained on {data['height']}x{data['width']} images: scored at that "
                   f"size, not the config's {cfg['data']['height']}x{cfg['data']['width']}")
    loaders = build_loaders(data, cfg["experiment"]["seed"])
    check_positives(loaders.dataset)
    metrics = evaluate_model(model, loaders.query, loaders.gallery, cfg["eval"], device)
    click.echo(markdown_table([(Path(checkpoint).name, model.backbone_name, metrics)]))
    click.echo(queries_line(metrics))
    if visualize:
        from reid_kd.evaluation.visualize import visualize_ranked_lists

        folder = Path(out) if out else Path(checkpoint).parent / "ranked_lists"
        files = visualize_ranked_lists(model, loaders.query, loaders.gallery, cfg["eval"], device, visualize, folder)
        click.echo(f"ranked lists: {len(files)} PNG files in {folder}")


@main.command()
@click.option("--suite", "suite_file", required=True, type=click.Path(dir_okay=False),
              help="Suite YAML, e.g. configs/suites/synth_cpu.yaml.")
@set_option
@overwrite_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Run N worker processes on this host (one GPU each when there are GPUs, else cores/N threads).")
@click.option("--launcher", type=click.Choice(LAUNCHERS), default=None,
              help="Submit --jobs worker jobs through submitit: slurm, or local (processes here, to try it out).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="With --launcher: jobs.")
@click.option("--partition", default=None, help="With --launcher slurm: the Slurm partition.")
@click.option("--gpus-per-job", type=click.IntRange(min=0), default=1, show_default=True,
              help="With --launcher: GPUs of each job.")
@click.option("--time", "minutes", type=click.IntRange(min=1), default=240, show_default=True,
              help="With --launcher: each job's time limit in minutes (a job cut short leaves its runs to resume).")
@click.option("--claim-timeout", type=click.FloatRange(min=1), default=600, show_default=True, metavar="SECONDS",
              help="A claimed run whose worker sent no heartbeat for this long is stale and taken over.")
@click.option("--status", is_flag=True, help="Print where each run stands (done, running, stale, failed, pending).")
@click.option("--worker-id", default="", hidden=True, help="This worker's name in its claims (set by launchers).")
@click.option("--launch", default="", hidden=True, help="The launch this worker belongs to (set by launchers).")
def bench(suite_file, overrides, overwrite, workers, launcher, jobs, partition, gpus_per_job, minutes, claim_timeout,
          status, worker_id, launch) -> None:
    """Run a benchmark suite: the teacher once, then the baseline and every method for every seed.

    Runs already done (metrics.json of the same config) are skipped; interrupted runs resume from
    their last checkpoint, so the command can simply be run again. Any number of these commands on
    one suite (processes, hosts sharing the runs folder) split its runs through claim files.
    """
    from reid_kd.bench.suite import plan_suite, run_suite
    from reid_kd.bench.suite_file import load_suite

    if workers and launcher:
        raise click.UsageError("give --workers N (processes here) or --launcher (jobs), not both")
    if not launcher and (partition or jobs != 1):
        raise click.UsageError("--jobs and --partition go with --launcher")
    suite = load_suite(suite_file)
    if status:
        from reid_kd.bench.status import status_table, suite_status

        click.echo(status_table(suite_status(suite, tuple(overrides), claim_timeout)))
        return
    if workers:
        from reid_kd.bench.launch import run_local_workers

        plan_suite(suite, tuple(overrides), overwrite)  # a config mistake is told once, not by every worker
        run_local_workers(suite_file, tuple(overrides), workers, overwrite, claim_timeout)
        click.echo(f"suite {suite.name}: every worker finished; `reidkd leaderboard` rebuilds its leaderboard")
        return
    if launcher:
        from reid_kd.bench.launch import submit_jobs

        submit_jobs(suite_file, tuple(overrides), jobs, launcher, partition, gpus_per_job, minutes, overwrite,
                    claim_timeout)
        click.echo(f"suite {suite.name}: every job finished; `reidkd leaderboard` rebuilds its leaderboard")
        return
    records = run_suite(suite, tuple(overrides), overwrite=overwrite, worker=worker_id, claim_timeout=claim_timeout,
                        launch=launch)
    click.echo(f"suite {suite.name}: {len(records)} of {len(suite.seeds) * len(suite.entries)} runs complete; "
               "`reidkd leaderboard` rebuilds its leaderboard")


@main.command()
@click.option("--suite", "suite_file", required=True, type=click.Path(dir_okay=False),
              help="The suite whose entries are tuned, e.g. configs/suites/synth_cpu.yaml.")
@click.option("--grid", "grid", multiple=True, required=True, metavar="[ENTRY:]KEY=V1,V2,...",
              help="Values of one option, e.g. --grid distill.kd.weight=0.1,1,10. Repeatable: grids of one entry "
                   "form their product, grids of several entries train side by side beside one baseline. The "
                   "entry is the one whose method the key names, or ENTRY: (e.g. gird_no_memory:distill.gird...).")
@click.option("--entry", default=None, help="The entry of every --grid without ENTRY: (default: from the key).")
@click.option("--validation-fraction", type=click.FloatRange(0.01, 0.5), default=VALIDATION_FRACTION,
              show_default=True,
              help="Fraction of the training identities held out as validation query and gallery.")
@click.option("--seeds", default=None, metavar="K1,K2,...",
              help="Seeds of the sweep (default: the suite's), e.g. --seeds 0 for a first pass.")
@click.option("--out", "out_dir", default="leaderboards", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the sweep tables <suite>-tune-<entry>.md.")
@click.option("--extend", type=click.IntRange(0, 20), default=EXTEND, show_default=True,
              help="Rounds of extension: where a grid's best point sits at an edge, one more point past it (spaced as "
                   "the grid, within the option's bounds) is trained, at most this many times. 0: the grid as given.")
@set_option
@overwrite_option
def tune(suite_file, grid, entry, validation_fraction, seeds, out_dir, extend, overrides, overwrite) -> None:
    """Train grids of entries' options on validation identities (never the test split); one table per entry.

    Resumable like bench: run it again to skip the grid points already done.
    """
    from reid_kd.bench.suite_file import load_suite
    from reid_kd.bench.tune import run_tuning

    _writes_to(out=out_dir)

    try:
        seed_list = tuple(int(k) for k in seeds.split(",")) if seeds else None
    except ValueError:
        raise click.BadParameter(f"expects seeds like 0,1,2, got {seeds!r}", param_hint="--seeds") from None
    if seed_list is not None and (any(k < 0 for k in seed_list) or len(set(seed_list)) != len(seed_list)):
        raise click.BadParameter(f"expects distinct non-negative seeds, got {seeds!r}", param_hint="--seeds")
    tables = run_tuning(load_suite(suite_file), grid, entry, tuple(overrides), validation_fraction, out_dir,
                        overwrite, seed_list, extend)
    for md in tables:
        click.echo(f"sweep table: {md}")


@main.command()
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder holding <suite>/suite.yaml.")
@click.option("--out", "out_dir", default="leaderboards", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the <suite>.md files and CMC plots.")
@click.option("--readme", default="README.md", show_default=True, type=click.Path(dir_okay=False),
              help="README whose `<!-- leaderboard:<suite> -->` blocks are rewritten (skipped if absent).")
@click.option("--matrix", default="configs/suites/matrix.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="`matrix: [suite, ...]`: the suites whose runs <out>/summary.md and the README's "
                   "`<!-- leaderboard:summary -->` block read together, once two of them have runs (skipped if absent).")
def leaderboard(runs_dir, out_dir, readme, matrix) -> None:
    """Rebuild every suite's leaderboard (markdown + CMC plot) from the stored runs, and the matrix's summary."""
    from reid_kd.bench.leaderboard import rebuild_all

    _writes_to(out=out_dir, readme=readme)

    written = rebuild_all(runs_dir, out_dir, readme, matrix)
    if not written:
        _fail(f"no suite runs under {runs_dir} (run `reidkd bench --suite FILE` first)")
    for path in written:
        click.echo(str(path))


@main.command()
def methods() -> None:
    """List every registered distillation method, each default option and where the default comes from;
    then every backbone, its stage widths and where its ImageNet weights come from."""
    rows = describe_methods()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        click.echo(f"{name.ljust(width)}  {description}")
        entry = DISTILLERS[name]
        values = {k: json.dumps(v) for k, v in default_values(entry).items()}  # as written in YAML: true, [1, 2]
        key_width = max(len(f"{k} = {v}") for k, v in values.items())
        for key, value in values.items():
            click.echo(f"{' ' * width}    {f'{key} = {value}'.ljust(key_width)}  {entry.sources[key]}")
    rows = describe_backbones()
    click.echo("\nbackbones (model.backbone, teacher.backbone; pretrained: imagenet downloads on first use):")
    name_width, widths_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, widths, description in rows:
        click.echo(f"  {name.ljust(name_width)}  {widths.ljust(widths_width)}  {description}")


device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (the GPU when there is one), cpu, cuda or cuda:N.")
checkpoint_option = click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
                                 help="student.pt (or teacher.pt) written by reidkd run or bench.")
search_params_option = click.option("--search-params", default=None, metavar="PARAMS",
                                    help="FAISS search parameters, e.g. nprobe=32 (IVF) or efSearch=128 (HNSW); "
                                         "default: those given at build, else FAISS's.")
query_checkpoint_option = click.option(
    "--query-checkpoint", type=click.Path(dir_okay=False), default=None,
    help="A student distilled from the index's model (e.g. a teacher's index) that embeds the queries in its "
         "place: asymmetric retrieval, the gallery never re-indexed. Its student.pt, or its export (.onnx, float "
         "or INT8).")


def _query_encoder(checkpoint, query_checkpoint) -> None:
    if checkpoint and query_checkpoint:
        raise click.UsageError("give --checkpoint (the index's own model, moved) or --query-checkpoint (a student "
                               "distilled from it), not both")


def _device(name: str):
    from reid_kd.engine.runtime import select_device

    return select_device(name, setting="--device", fix="--device auto")


@main.command()
@checkpoint_option
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]),
              help="ONNX (ONNX Runtime, TensorRT, OpenVINO) or TorchScript (LibTorch).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Model file (default: beside the checkpoint, .onnx or .ts); its preprocessing goes to OUT.json.")
def export(checkpoint, fmt, out) -> None:
    """Export the retrieval model (images -> L2-normalised bn_feat, any batch size) with its preprocessing."""
    from reid_kd.deploy.export import export_model

    _writes_to(out=out)

    model_file, meta_file = export_model(checkpoint, fmt, out)
    click.echo(f"{fmt} model: {model_file}")
    click.echo(f"input and output (size, mean, std, feature dim): {meta_file}")


@main.command()
@checkpoint_option
@config_option
@set_option
@click.option("--calibration-images", type=click.IntRange(min=1), default=CALIBRATION_IMAGES, show_default=True,
              metavar="N", help="Images of the config's train split (a seeded sample) that calibrate the INT8 ranges.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Float ONNX model file (default: beside the checkpoint, .onnx); the INT8 one goes beside it as "
                   ".int8.onnx, each with its .json.")
def quantize(checkpoint, config, overrides, calibration_images, out) -> None:
    """Quantize a student to INT8 (ONNX Runtime, static, calibrated on training images) beside its float ONNX model;
    print the mAP of the PyTorch, float ONNX and INT8 models, what each loses, and their images/s, side by side."""
    if not config:
        raise click.UsageError("give --config F: its train split calibrates the INT8 model, its query and gallery "
                               "score it")
    cfg = load_config(config, overrides)
    _writes_to(out=out)
    from reid_kd.deploy.quantize import quantize_and_score
    from reid_kd.engine.runtime import setup_runtime

    setup_runtime(cfg)  # its threads: PyTorch and ONNX Runtime are timed at experiment.threads
    record = quantize_and_score(checkpoint, cfg, calibration_images, out)
    click.echo(deployment_table(record))
    q = record["quantization"]
    click.echo(queries_line(record["models"]["pytorch"]))
    click.echo(f"INT8: {q['tool']}, calibrated on {q['calibration']['images']} images of the "
               f"{q['calibration']['dataset']} train split (seed {q['calibration']['seed']}). Images/s: the forward "
               f"passes over the gallery, the three models timed one after another in this run on the CPU, "
               f"{record['threads']} thread(s).")


def deployment_table(record: dict) -> str:
    """The PyTorch student and its exported float and INT8 models: mAP, its loss against PyTorch, and speed."""
    from tabulate import tabulate

    files = {"pytorch": record["checkpoint"], **record["files"]}
    labels = {"pytorch": "PyTorch", "onnx": "ONNX float32", "int8": "ONNX INT8"}
    reference = record["models"]["pytorch"]["mAP"]
    body = [[labels[name], Path(files[name]).name, f"{100 * m['mAP']:.2f}",
             "reference" if name == "pytorch" else f"{100 * (m['mAP'] - reference):+.2f}",
             f"{100 * m['rank1']:.2f}", f"{100 * m['mINP']:.2f}", f"{m['inference_images_per_sec']:.0f}"]
            for name, m in record["models"].items()]
    return tabulate(body, headers=["Model", "File", "mAP", "Δ mAP vs PyTorch", "Rank-1", "mINP", "Images/s"],
                    tablefmt="github", disable_numparse=True)


@main.group()
def index() -> None:
    """FAISS gallery indexes of a trained model: build one, evaluate it (`reidkd search` queries it)."""


@index.command("build")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="student.pt (or teacher.pt), or a model exported by reidkd export / quantize (.onnx, float or "
                   "INT8: run by ONNX Runtime on the CPU), which then embeds the queries of search and index eval.")
@click.option("--images", multiple=True, type=click.Path(exists=True), metavar="DIR",
              help="Folder (searched recursively) or image files to index; repeatable. Identity and camera are read "
                   "from names like 0002_c003_... (else -1).")
@config_option
@set_option
@click.option("--split", type=click.Choice(["gallery", "query", "train"]), default="gallery", show_default=True,
              help="With --config: the split whose images are indexed.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Index folder to write.")
@click.option("--factory", default="Flat", show_default=True,
              help="FAISS index factory: Flat (exact), or approximate, e.g. IVF4096,PQ64 or HNSW32.")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Vectors sampled to train an approximate index (default: all of them).")
@search_params_option
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
@device_option
def index_build(checkpoint, images, config, overrides, split, out, factory, train_size, search_params, batch_size,
                workers, device) -> None:
    """Extract features of a gallery and write a FAISS index with a table of paths, identities and cameras."""
    if bool(images) == bool(config):
        raise click.UsageError("give either --images DIR or --config F (with --split)")
    cfg = load_config(config, overrides) if config else None
    _writes_to(out=out)
    from reid_kd.deploy.index import build_index, items_from_config, items_from_images

    if cfg is not None:
        items, _ = items_from_config(cfg, split)
        source = {"config": str(Path(config).resolve()), "set": list(overrides), "split": split,
                  "dataset": cfg["data"]["dataset"]}
    else:
        items, source = items_from_images(list(images)), {"images": [str(Path(p).resolve()) for p in images]}
    meta = build_index(checkpoint, items, out, factory, train_size, search_params, source, _device(device),
                       batch_size, workers)
    click.echo(f"index: {meta['count']} images, {meta['factory']}, {meta['dim']}-d, built in "
               f"{meta['build_seconds']:.1f} s -> {out}")


@index.command("eval")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@config_option
@set_option
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Ranked-list depth scored (default: the whole gallery; a shorter one gives mAP@depth).")
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="k of recall@k.")
@search_params_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The index's model where it moved (default: the path the index records).")
@query_checkpoint_option
@device_option
def index_eval(index_dir, config, overrides, depth, k, search_params, checkpoint, query_checkpoint, device) -> None:
    """mAP/CMC of an index on the config's query split, its recall@k against exact search, and queries/s."""
    if not config:
        raise click.UsageError("give --config F: its query split is scored against the index")
    _query_encoder(checkpoint, query_checkpoint)
    cfg = load_config(config, overrides)
    from reid_kd.deploy.index import GalleryIndex
    from reid_kd.deploy.index_eval import evaluate_index

    gallery = GalleryIndex.load(index_dir, search_params)
    m = evaluate_index(gallery, cfg, depth, k, checkpoint, _device(device), query_checkpoint=query_checkpoint)
    model = gallery.meta["backbone"] + (f", queries by {m['query_backbone']}" if query_checkpoint else "")
    click.echo(markdown_table([(f"index {gallery.meta['factory']}", model, m)]))
    click.echo(queries_line(m))
    click.echo(f"Ranked to depth {m['depth']} of {gallery.index.ntotal} gallery items. recall@{m['k']} "
               f"{m['recall']:.4f} against exact search; {m['queries_per_second']:.0f} queries/s through the index, "
               f"{m['exact_queries_per_second']:.0f} exact (top-{m['k']} of {m['num_queries']} queries).")


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the ranked lists into one PNG, a row per query.")
@search_params_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The index's model where it moved (default: the path the index records).")
@query_checkpoint_option
@device_option
def search(index_dir, images, top_k, png, search_params, checkpoint, query_checkpoint, device) -> None:
    """The top-k gallery items of each query image (files or folders) in an index."""
    from reid_kd.deploy.index import GalleryIndex
    from reid_kd.deploy.search import search_images, write_ranked_lists_png

    _query_encoder(checkpoint, query_checkpoint)
    _writes_to(png=png)

    gallery = GalleryIndex.load(index_dir, search_params)
    queries, table = search_images(gallery, list(images), top_k, checkpoint, _device(device), query_checkpoint)
    click.echo(table.to_markdown(index=False, floatfmt=".4f"))
    if png:
        click.echo(f"ranked lists: {write_ranked_lists_png(queries, table, top_k, png)}")


@main.command()
@click.argument("models", nargs=-1, required=True, metavar="[NAME=]MODEL...")
@click.option("--teacher", "with_teacher", is_flag=True,
              help="Put first the teacher the first run distilled from (its metrics.json's teacher.source).")
@click.option("--config", "-c", type=click.Path(dir_okay=False),
              help="YAML config of the query and gallery (default: the config.yaml of the first run folder given).")
@set_option
@click.option("--select", "selections", multiple=True, type=click.Choice(list(SELECTIONS)),
              help="Which queries (repeatable): fixed / broken (the last model's AP most above / below the "
                   "reference's), worst, best (the last model's), random (seeded). Default: all that apply.")
@click.option("--queries", "n", type=click.IntRange(min=1), default=5, show_default=True,
              help="Queries per selection.")
@click.option("--top-k", type=click.IntRange(1, 50), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --select random.")
@click.option("--reference", default=None, metavar="NAME",
              help="The model fixed / broken compare the last one with (default: baseline, else the first).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the PNGs and index.html.")
@device_option
def ranklists(models, with_teacher, config, overrides, selections, n, top_k, seed, reference, out, device) -> None:
    """Several models' top-k of the same queries side by side, one PNG per query, and an index page.

    MODEL: a run folder (runs/<experiment>/<run>/seed<k>: its student.pt), a teacher's folder
    (runs/teachers/<key>) or a student.pt / teacher.pt; NAME= names its row (default: the run's name,
    `teacher`, or the file's).
    """
    compared = resolve(list(models), with_teacher)
    config = config or recorded_config(compared)
    if config is None:
        raise click.UsageError("give --config F: no model given is a run folder that records its config")
    cfg = load_config(config, overrides)
    _writes_to(out=out)
    from reid_kd.deploy.ranklists import write_rank_lists

    page, count = write_rank_lists(compared, cfg, out, _device(device), list(selections) or None, n, top_k, seed,
                                   reference)
    click.echo(f"rank lists of {', '.join(m.name for m in compared)}: {count} PNG files and {page}")


@main.group()
def data() -> None:
    """Dataset tools."""


@data.command()
@config_option
@set_option
@click.option("--root", type=click.Path(file_okay=False),
              help="Output folder (default: <data.root>/synth_veri, or <data.root>/synth_market with --persons).")
@click.option("--persons", is_flag=True, help="Generate the synthetic persons (Market-1501 layout) instead.")
def synth(config, overrides, root, persons) -> None:
    """Generate the synthetic VeRi-layout dataset of a config (or the Market-layout persons)."""
    from reid_kd.data import synth as synth_mod
    from reid_kd.data import synth_person

    cfg = load_config(config, overrides)
    target = Path(root) if root else Path(cfg["data"]["root"]) / ("synth_market" if persons else "synth_veri")
    (synth_person if persons else synth_mod).generate(target, synth_mod.SynthSpec(**cfg["data"]["synth"]))


@data.command()
@click.argument("name")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Data root holding the dataset folder.")
@config_option
@set_option
@click.option("--skip-images", is_flag=True, help="Do not decode every image (faster on a full dataset).")
def check(name, root, config, overrides, skip_images) -> None:
    """Load dataset NAME, print its table beside the official counts and what is wrong (exit 1 if anything).

    NAME's options come from its block of the config, e.g. --set data.vehicleid.test_size=1600."""
    DATASETS[name]  # an unknown name stops here, before the config is read
    from reid_kd.data.check import check_dataset

    cfg = load_config(config, [*overrides, f"data.dataset={name}"])  # NAME's options block, checked
    report = check_dataset(name, root, config_options(cfg["data"], name), read_images=not skip_images)
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
