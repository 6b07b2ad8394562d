"""Distillation methods, one module each; importing this package registers them all."""
from reid_kd.distill.registry import DISTILLERS, Distiller, build_distiller, register

__all__ = ["DISTILLERS", "Distiller", "build_distiller", "register"]
