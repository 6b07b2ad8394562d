"""Deploying a trained student: export to ONNX / TorchScript, a FAISS gallery index, search and its evaluation."""
