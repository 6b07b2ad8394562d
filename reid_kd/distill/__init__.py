"""Distillation methods, one module each; their registry with every option: `catalog.py`."""
