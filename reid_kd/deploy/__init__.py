"""Deploying a trained student: export to ONNX / TorchScript, INT8 quantization, a FAISS gallery index, search and
its evaluation."""

CALIBRATION_IMAGES = 256  # INT8 (deploy/quantize.py): train images sampled to calibrate; its docstring says why
