"""Experiment configuration: YAML with `_base_` inheritance, dotted overrides, strict validation.

What a config may hold is `reid_kd.schema`; distillation methods and datasets declare their own options
in their registries (`reid_kd/distill/catalog.py`, `reid_kd/data/catalog.py`), validated the same way
under `distill.<method>` and `data.<dataset>`. The caller passes the registries, so reading a config
imports neither torch nor any layer above this one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from reid_kd.errors import ConfigError
from reid_kd.registry import Entry, Registry, UnknownNameError
from reid_kd.schema import SCHEMA, Typed, validate


class _StrictLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false; 'yes', 'no', 'on' and 'off' stay strings (and are rejected
    where a boolean belongs) rather than silently becoming booleans."""


_StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _ch in "tTfF":
    _StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), [_ch])
# YAML 1.1 reads 1e-3 (no dot) as a string; accept the float spellings every other tool accepts.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def parse_yaml(text: str, source: str = "config") -> Any:
    """YAML text read strictly (YAML 1.2 booleans); a syntax error is one line naming `source` and where."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML{where}: {problem}") from None


@dataclass(frozen=True)
class Registries:
    """What a config's names and method options are checked against; the layers that own them pass them
    (`reid_kd.engine.configs.load_config`), so this module imports none of them."""

    datasets: Registry
    backbones: Registry
    distillers: Registry


# data keys that became options in their dataset's block: the old key is refused naming the new one
MOVED_DATA_KEYS = {
    "vehicleid_test_size": "vehicleid.test_size", "vehicleid_draws": "vehicleid.draws",
    "vehicleid_draw_seed": "vehicleid.draw_seed", "veriwild_test_size": "veriwild.test_size",
    "msmt17_version": "msmt17.version", "cuhk03_variant": "cuhk03.variant",
    "custom_csv": "custom_csv.path", "custom_dir": "custom_folder.path",
}


def validate_config(cfg: dict[str, Any], registries: Registries) -> dict[str, Any]:
    """`schema.validate` with the schema of what the config chooses (`config_schema`)."""
    return validate(cfg, config_schema(cfg, registries))


def config_schema(cfg: dict[str, Any], registries: Registries) -> dict[str, Any]:
    """The schema of a config: the `data` block gains the options block of each dataset it uses, the
    `distill` block the method's options."""
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    distill = cfg.get("distill") if isinstance(cfg.get("distill"), dict) else {}
    method = distill.get("method", "none")
    block: dict[str, Any] = {"method": "none"}
    if method != "none":
        block[method] = _entry(registries.distillers, "distill.method", method).options
    return {**SCHEMA, "data": data_schema(data, registries.datasets), "distill": block}


def key_bounds(schema: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """The inclusive (low, high) a dotted key's schema declares (None where it declares none, or no such key)."""
    spec: Any = schema
    for part in key.split("."):
        spec = spec.get(part) if isinstance(spec, dict) else None
    return (spec.low, spec.high) if isinstance(spec, Typed) else (None, None)


def dataset_block(entry: Entry) -> str:
    """The key of a dataset's options block under `data`: its name, or the block its entry names (`synth`)."""
    return entry.info.get("block", entry.name)


def data_schema(data: dict[str, Any], datasets: Registry) -> dict[str, Any]:
    """The `data` schema of a config: the common keys plus the options block of each dataset it uses
    (`data.dataset`, `data.train_datasets`). A block of a dataset it does not use and a key that moved
    into a block are refused here, each with its fix."""
    train = data.get("train_datasets", [])
    names = [("data.dataset", data.get("dataset", SCHEMA["data"]["dataset"]))]
    names += [("data.train_datasets", name) for name in (train if isinstance(train, list) else [])]
    used = [_entry(datasets, key, name) for key, name in names if isinstance(name, str)]
    schema = {**SCHEMA["data"], **{dataset_block(e): e.options for e in used if e.options}}
    owners = {dataset_block(datasets[name]): name for name in datasets if datasets[name].options}
    for key, value in data.items():
        if key in MOVED_DATA_KEYS and not isinstance(value, dict):
            raise ConfigError(f"config key 'data.{key}' is now 'data.{MOVED_DATA_KEYS[key]}'; rename it")
        if key not in schema and key in owners:
            option = f"data.{key}.{next(iter(value))}" if isinstance(value, dict) and value else f"data.{key}"
            raise ConfigError(f"config key '{option}' is an option of dataset {owners[key]}, which this config "
                              f"does not use; remove it, or set data.dataset={owners[key]}")
    return schema


def _entry(registry: Registry, key: str, name: str) -> Entry:
    try:
        return registry[name]
    except UnknownNameError as e:
        raise ConfigError(f"config key '{key}': {e}") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config inheritance cycle through {path}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, _read_yaml(path.parent / base, seen + (path,)))
    return deep_merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value) with the value read as YAML (so 3, 1e-3, true, [1, 2])."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), parse_yaml(raw, f"--set {item!r}") if raw.strip() else None


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        path, value = parse_override(item)
        node = cfg
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a mapping")
        node[path[-1]] = value
    return cfg


def load_config(path: str | Path | None, overrides: Iterable[str], registries: Registries) -> dict[str, Any]:
    """Read, inherit, override and validate a config; returns the complete resolved dict."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    cfg = validate_config(apply_overrides(raw, overrides), registries)
    check_names(cfg, registries)
    check_pretraining_disjoint(cfg)
    check_batch_multiples(cfg, registries)
    check_networks(cfg)
    check_protocols(cfg)
    return cfg


def check_pretraining_disjoint(cfg: dict[str, Any]) -> None:
    """`pretrained: synth` vehicles must not be the benchmark's: they need another generator seed."""
    uses = any(cfg[block]["pretrained"] == "synth" for block in ("model", "teacher"))
    datasets = {cfg["data"]["dataset"], *cfg["data"]["train_datasets"]}
    seed = cfg["pretrain"]["synth"]["seed"]
    if uses and "synth_veri" in datasets and seed == cfg["data"]["synth"]["seed"]:
        raise ConfigError(f"config key 'pretrain.synth.seed': {seed} is data.synth.seed too, so the pretraining "
                          "vehicles would be the benchmark's; give it another seed")


def check_networks(cfg: dict[str, Any]) -> None:
    """`model.input_size` is [height, width]; the retrieval head takes the BN neck's place, so it needs one."""
    size = cfg["model"]["input_size"]
    if size is not None and len(size) != 2:
        raise ConfigError(f"config key 'model.input_size' expects [height, width], got {size!r}")
    for block in ("model", "teacher"):
        if cfg[block]["embedding_dim"] is not None and cfg[block]["neck"] != "bnneck":
            raise ConfigError(f"config key '{block}.embedding_dim': the retrieval head replaces the BN neck, which "
                              f"{block}.neck=none turns off; set {block}.neck=bnneck or {block}.embedding_dim=null")


def check_protocols(cfg: dict[str, Any]) -> None:
    """`eval.protocols` names at least one protocol, each once (the first is the run's headline)."""
    protocols = cfg["eval"]["protocols"]
    if not protocols or len(set(protocols)) != len(protocols):
        raise ConfigError(f"config key 'eval.protocols' must list symmetric and/or asymmetric once each, "
                          f"got {protocols!r}")


def check_batch_multiples(cfg: dict[str, Any], registries: Registries) -> None:
    """A method's options counted in samples of whole batches (its entry's `batch_multiples`, e.g. a FIFO
    memory written one global batch at a time) must be multiples of data.batch_p × data.batch_k."""
    method = cfg["distill"]["method"]
    if method == "none":
        return
    batch = cfg["data"]["batch_p"] * cfg["data"]["batch_k"]
    for key in registries.distillers[method].info.get("batch_multiples", ()):
        value = cfg["distill"][method][key]
        if value % batch:
            raise ConfigError(f"config key 'distill.{method}.{key}': {value} is not a multiple of the batch "
                              f"(data.batch_p × data.batch_k = {batch}); use e.g. {max(batch, value // batch * batch)}")


def check_names(cfg: dict[str, Any], registries: Registries) -> None:
    """Backbones must be registered ones (datasets were checked with their options, by `data_schema`)."""
    for block in ("model", "teacher"):
        _entry(registries.backbones, f"{block}.backbone", cfg[block]["backbone"])


# (block, key) of the settings that watch a run without shaping it: left out of its hash, so turning one on
# keeps the run the same run (resumed, not refused as another config's) and every stored hash as it was
NOT_HASHED = (("experiment", "mlflow"),)


def config_hash(cfg: dict[str, Any]) -> str:
    """A short stable hash of a resolved config, to tell whether a stored result still matches."""
    shaping = dict(cfg)
    for block, key in NOT_HASHED:
        if isinstance(shaping.get(block), dict):
            shaping[block] = {k: v for k, v in shaping[block].items() if k != key}
    blob = json.dumps(shaping, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
