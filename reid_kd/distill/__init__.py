"""Distillation methods, one module each; importing this package registers them all."""
from reid_kd.distill.registry import DISTILLERS, Distiller, build_distiller, describe_methods, register
from reid_kd.distill import at, cc, crd, cskd, dkd, fitnet, gird, irg, kd, pkt, rkd, sp  # noqa: F401,E402

__all__ = ["DISTILLERS", "Distiller", "build_distiller", "describe_methods", "register"]
