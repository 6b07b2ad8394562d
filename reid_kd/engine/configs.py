"""Configs as runs read them: `config.load_config` checked against every registry.

The registries are light modules (names and option schemas, no torch), so loading a config through
here still tells a mistake before any heavy import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from reid_kd import config
from reid_kd.data.catalog import DATASETS
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.models.catalog import BACKBONES

REGISTRIES = config.Registries(datasets=DATASETS, backbones=BACKBONES, distillers=DISTILLERS)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read, inherit, override and validate a config against the registries."""
    return config.load_config(path, overrides, REGISTRIES)


def option_bounds(cfg: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """The inclusive (low, high) the schema declares for dotted `key` of this config (None: no bound)."""
    return config.key_bounds(config.config_schema(cfg, REGISTRIES), key)
