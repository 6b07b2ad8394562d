"""What a config may hold: option types with bounds, the schemas with their defaults, and the checks.

Every key a config may hold is declared in `SCHEMA` with its default, so a typo such as `train.lrr`
or a string where a number belongs stops the run before any work is done, with the key's dotted name
in the message. Registry entries (distillation methods) declare their options with the same types, and a
suite file (bench/suite_file.py) its keys.
Nothing here imports torch: a config mistake is told before any heavy import.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, Iterable

from reid_kd.errors import ConfigError, did_you_mean


class Typed:
    """A schema leaf whose default alone does not tell its type (None, or a list), or with bounds.

    `required`: the key must be given (a file's own keys, e.g. a suite's seeds); `item`: the type of a
    list's items, or a schema each item (a mapping) is validated against; `pattern`: a regex every string
    (or string item) matches whole, `form` saying it in words for the error.
    """

    def __init__(self, kind: type | tuple[type, ...], default: Any = None, *, optional: bool = True,
                 required: bool = False, item: type | dict | None = None, choices: Iterable[Any] | None = None,
                 low: float | None = None, high: float | None = None, pattern: str | None = None,
                 form: str = "", why: str = ""):
        self.kind, self.default, self.optional, self.required, self.item = kind, default, optional, required, item
        self.choices = tuple(choices) if choices is not None else None
        self.low, self.high, self.why = low, high, why  # inclusive bounds; `why` ends the error message
        self.pattern, self.form = re.compile(pattern, re.S) if pattern else None, form


def Num(default: int | float, low: float | None = None, high: float | None = None, why: str = "") -> Typed:
    """A required number within [low, high], typed by its default (int, or float accepting ints)."""
    return Typed(type(default), default, optional=False, low=low, high=high, why=why)


def Maybe(kind: type, low: float | None = None, why: str = "") -> Typed:
    """An optional number (null allowed) of at least `low`."""
    return Typed(kind, None, low=low, why=why)


def Choice(default: str, *choices: str, why: str = "") -> Typed:
    return Typed(str, default, optional=False, choices=(default, *choices), why=why)


def Folder() -> Typed:
    """A required folder name: no separator or leading dot, so what it names stays inside its parent folder."""
    return Typed(str, optional=False, required=True, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                 form="a folder name (letters, digits, _ . -)")


def Overrides() -> Typed:
    """A list of `key.path=value` strings, as `--set` takes them."""
    return Typed(list, [], optional=False, item=str, pattern=r"[^=]*=.*", form="'key.path=value' strings")


def synth_block(train_ids: int, test_ids: int, images_per_id: int, image_size: int, seed: int) -> dict[str, Any]:
    """The schema of a synthetic dataset's generator spec (data/synth.py's SynthSpec) with these defaults."""
    return {
        "train_ids": Num(train_ids, 2),
        "test_ids": Num(test_ids, 1),
        "cameras": Num(8, 2, why="a query needs a positive under another camera"),
        "images_per_id": Num(images_per_id, 2),
        "image_size": Num(image_size, 16),
        "seed": Num(seed, 0),
    }


# `data.synth`: the options of synth_veri and synth_market (their entries name this block), in every config
# whatever its dataset: `reidkd data synth` generates from it, and configs built on configs/_base_/synth.yaml
# are switched to other datasets with --set data.dataset=...
SYNTH = synth_block(train_ids=200, test_ids=100, images_per_id=12, image_size=128, seed=0)

# a network's retrieval width when it has the embedding head (null: its BN neck, the backbone's width)
EMBEDDING_DIM = Typed(int, None, low=1)

TRAIN_SCHEMA: dict[str, Any] = {
    "epochs": Num(12, 1, why="an untrained model would be evaluated and cached"),
    "optimizer": Choice("adam", "sgd"),
    "lr": Num(3.5e-4, 1e-12),
    "momentum": Num(0.9, 0.0, 0.999),
    "weight_decay": Num(5e-4, 0.0),
    "warmup_epochs": Num(2, 0),
    "warmup_factor": Num(0.1, 1e-6, 1.0),
    "scheduler": Choice("cosine", "step"),
    "milestones": Typed(list, [40, 70], optional=False, item=int),
    "gamma": Num(0.1, 1e-6, 1.0),
    "id_loss_weight": Num(1.0, 0.0),
    "label_smooth": Num(0.1, 0.0, 0.999),
    "triplet_weight": Num(1.0, 0.0),
    "triplet_margin": Num(0.3, 0.0),
    "triplet_soft_margin": False,
    "triplet_normalize": False,  # triplet on L2-normalised features (fast-reid's TripletLoss norm_feat)
    "grad_clip": Maybe(float, 1e-12),
    # the layout the network trains in under this recipe; null: the network's own `memory_format`. A cached
    # network (a teacher, a pretrained backbone) keeps its key when only the layout it runs in changes
    "memory_format": Typed(str, None, choices=("contiguous", "channels_last")),
}

SCHEMA: dict[str, Any] = {
    "experiment": {
        "name": "default",
        "run_name": Typed(str, None),  # the run's folder under <output_dir>/<name>/; null: the method's name
        "output_dir": "runs",
        "seed": Num(0, 0),
        "device": Choice("auto", "cpu", "cuda"),
        "amp": False,
        "deterministic": False,
        "threads": Maybe(int, 1, why="null uses every core"),  # null: every core (bench --workers N: cores/N)
        "sync_bn": False,  # under torchrun: BatchNorm statistics over the global batch (every rank's share)
        # MLflow tracking (engine/tracking.py): null/false off; true: the file store <output_dir>/mlruns; a
        # tracking URI or a store folder. Not in a run's config hash: it watches a run, it does not shape it
        "mlflow": Typed((bool, str), None),
    },
    "data": {
        "dataset": "synth_veri",
        "root": "datasets",
        "height": Num(128, 16, why="the networks downsample by 16"),
        "width": Num(128, 16, why="the networks downsample by 16"),
        "batch_p": Num(16, 2, why="batch-hard triplets need another identity in the batch"),
        "batch_k": Num(4, 2, why="batch-hard triplets need a second image of each identity"),
        "test_batch_size": Num(128, 1),
        "workers": Num(0, 0),
        "cache_images": True,
        "flip_prob": Num(0.5, 0.0, 1.0),
        "pad": Num(10, 0),
        "random_erasing_prob": Num(0.5, 0.0, 1.0),
        # A loader's own options sit in its dataset's block, `data.<dataset>.<option>`, declared by its entry
        # in data/catalog.py and present when the config uses the dataset; `data.synth` is in every config
        "synth": SYNTH,
        "train_datasets": Typed(list, [], optional=False, item=str),  # train on these too (ids prefixed)
        # > 0: hold out this fraction of the train identities as query and gallery, and drop the test
        # split (data/validation.py); what `reidkd tune` chooses options on
        "validation_fraction": Num(0.0, 0.0, 0.5),
        "validation_seed": Num(0, 0),
    },
    "model": {
        "backbone": "resnet18",
        # null (random), imagenet (torchvision's weights via torch hub's cache), synth (engine/pretrain.py), a file
        "pretrained": Typed(str, None),
        "last_stride": Typed(int, 1, optional=False, choices=(1, 2)),
        "neck": Choice("bnneck", "none"),
        # the layout of its activations (channels_last is faster for some networks on some processors:
        # benchmarks/step_times.py measures yours): in inference, and in training unless the recipe
        # (`train`, `pretrain.student`) names its own; the layout a network trained in is part of its cache key
        "memory_format": Choice("contiguous", "channels_last"),
        # null: the BN neck; d: the retrieval head BN, ReLU, Linear to d, BN in its place (models/reid_model.py)
        "embedding_dim": EMBEDDING_DIM,
        # [height, width] the student sees (its input resized in its forward, training and evaluation alike);
        # null: the data's size (data.height, data.width), at which the teacher always sees the images
        "input_size": Typed(list, None, item=int, low=16, why="the networks downsample by 16"),
    },
    "teacher": {
        "backbone": "resnet50",
        "pretrained": Typed(str, None),
        "last_stride": Typed(int, 1, optional=False, choices=(1, 2)),
        "neck": Choice("bnneck", "none"),
        "checkpoint": Typed(str, None),
        "seed": Maybe(int, 0),  # seed of the teacher's training; null: experiment.seed
        # its frozen forward and evaluation, and its training unless `teacher.train.memory_format` is set
        "memory_format": Choice("contiguous", "channels_last"),
        # the frozen teacher's forward while students distil: null as experiment.amp (float32, or mixed
        # precision), else autocast to this type (bfloat16 on CPU, float16 on CUDA are the fast ones)
        "forward_dtype": Typed(str, None, choices=("float32", "bfloat16", "float16")),
        "embedding_dim": EMBEDDING_DIM,  # as model.embedding_dim; asymmetric retrieval needs the student's width
        "train": TRAIN_SCHEMA,
    },
    "train": TRAIN_SCHEMA,
    # `pretrained: synth`: the backbone first trained on these synthetic vehicles (engine/pretrain.py);
    # their generator seed must differ from data.synth.seed, so no identity is the benchmark's
    "pretrain": {
        # its test identities are held out for the pretraining's own mAP, in its metrics.json
        "synth": synth_block(train_ids=600, test_ids=50, images_per_id=10, image_size=64, seed=7),
        "seed": Num(0, 0),
        "student": TRAIN_SCHEMA,  # the recipe pretraining `model`'s backbone
        "teacher": TRAIN_SCHEMA,  # the recipe pretraining `teacher`'s backbone
    },
    "distill": {"method": "none"},
    "eval": {
        "metric": Choice("cosine", "euclidean"),
        "max_rank": Num(50, 10, why="Rank-10 is reported"),
        "query_chunk": Num(1024, 1),
        "faiss_gpu": Choice("auto", "never"),
        # k-reciprocal re-ranking (Zhong et al., CVPR 2017); k1, k2, lambda: the paper's defaults
        "rerank": False,
        "rerank_k1": Num(20, 1),
        "rerank_k2": Num(6, 1),
        "rerank_lambda": Num(0.3, 0.0, 1.0),
        # how a student is scored (the first is the run's headline; each is recorded under `protocols`):
        # symmetric (student queries x student gallery) and asymmetric (student queries x teacher gallery; after
        # the first, skipped for a student whose retrieval width is not the teacher's, its record saying so)
        "protocols": Typed(list, ["symmetric"], optional=False, item=str, pattern="symmetric|asymmetric",
                           form="protocol names (symmetric, asymmetric)"),
    },
}


def _leaf_default(spec: Any) -> Any:
    if isinstance(spec, Typed):
        return copy.deepcopy(spec.default)
    if isinstance(spec, dict):
        return {k: _leaf_default(v) for k, v in spec.items()}
    return spec


def defaults(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full default config (a fresh copy)."""
    return _leaf_default(SCHEMA if schema is None else schema)


def _type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _check_leaf(key: str, spec: Any, value: Any, noun: str = "config") -> Any:
    if isinstance(spec, Typed):
        return _check_finite(key, _check_typed(key, spec, value, noun), noun)
    expected = type(spec)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(f"{noun} key '{key}' expects {expected.__name__}, "
                          f"got {type(value).__name__} {value!r}")
    return _check_finite(key, value, noun)


def _check_finite(key: str, value: Any, noun: str) -> Any:
    """No number a config holds may be NaN or infinite, bounded or not (a loss weight of .nan would train NaNs)."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{noun} key '{key}' must be a finite number, got {v!r}")
    return value


def _check_typed(key: str, spec: Typed, value: Any, noun: str) -> Any:
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{noun} key '{key}' must not be null")
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if not isinstance(value, spec.kind) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{noun} key '{key}' expects {_type_name(spec.kind)}, "
                          f"got {type(value).__name__} {value!r}")
    if isinstance(spec.item, dict):
        return [validate(_mapping(f"{key}[{i}]", v, noun), spec.item, f"{key}[{i}].", noun)
                for i, v in enumerate(value)]
    if spec.item is not None:
        for v in value:
            if not isinstance(v, spec.item) or isinstance(v, bool):
                raise ConfigError(f"{noun} key '{key}' expects a list of "
                                  f"{_type_name(spec.item)}, got {v!r} in it")
    if spec.pattern is not None:
        for v in value if isinstance(value, list) else [value]:
            if not spec.pattern.fullmatch(v):
                form = f"a list of {spec.form}" if isinstance(value, list) else spec.form
                raise ConfigError(f"{noun} key '{key}' expects {form}, got {v!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{noun} key '{key}' must be one of {list(spec.choices)}, got {value!r}"
                          + (f" ({spec.why})" if spec.why else ""))
    _check_bounds(key, spec, value, noun)
    return value


def _mapping(key: str, value: Any, noun: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{noun} key '{key}' expects a mapping, got {value!r}")
    return value


def _check_bounds(key: str, spec: Typed, value: Any, noun: str) -> None:
    """Bounds hold for a number, and for every item of a list."""
    if spec.low is None and spec.high is None:
        return
    _check_finite(key, value, noun)
    for v in value if isinstance(value, list) else [value]:
        if (spec.low is not None and v < spec.low) or (spec.high is not None and v > spec.high):
            span = (f"at least {spec.low}" if spec.high is None else f"at most {spec.high}" if spec.low is None
                    else f"between {spec.low} and {spec.high}")
            got = f"got {v!r} in {value!r}" if isinstance(value, list) else f"got {v!r}"
            raise ConfigError(f"{noun} key '{key}' must {'hold numbers' if isinstance(value, list) else 'be'} "
                              f"{span}, {got}" + (f" ({spec.why})" if spec.why else ""))


def validate(cfg: dict[str, Any], schema: dict[str, Any] | None = None, prefix: str = "",
             noun: str = "config") -> dict[str, Any]:
    """Fill defaults and check every key and type against the schema; returns a new dict.

    `noun` names the file kind in messages ("unknown suite key 'x'"); every error is one line naming the key.
    """
    schema = SCHEMA if schema is None else schema
    out = defaults(schema)
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            hint = did_you_mean(key, schema) or f" (known: {', '.join(schema) or 'none'})"
            raise ConfigError(f"unknown {noun} key '{dotted}'{hint}")
        spec = schema[key]
        if isinstance(spec, dict):
            out[key] = validate(_mapping(dotted, value, noun), spec, dotted + ".", noun)
        else:
            out[key] = _check_leaf(dotted, spec, value, noun)
    missing = [key for key, spec in schema.items() if isinstance(spec, Typed) and spec.required and key not in cfg]
    if missing:
        raise ConfigError(f"missing {noun} key '{prefix}{missing[0]}'")
    return out
