"""Feature extraction and exact FAISS-based retrieval evaluation."""
from reid_kd.evaluation.metrics import evaluate
from reid_kd.evaluation.extract import PROTOCOLS, Features, evaluate_model, extract_features

__all__ = ["PROTOCOLS", "Features", "evaluate", "evaluate_model", "extract_features"]
