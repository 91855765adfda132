"""Evaluation as the CLIP paper measures it: zero-shot classification, retrieval, linear probes.

Every runner writes one JSON report (model, weight fingerprint, dataset, metrics, timing,
memory, versions, device, date) and a log beside it, and returns the report as a dict.
"""

from clipforge.evaluate.linear_probe_eval import evaluate_linear_probe
from clipforge.evaluate.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_per_class_recall,
    per_class_accuracy,
    retrieval_metrics,
    topk_accuracy,
)
from clipforge.evaluate.retrieval_eval import evaluate_retrieval
from clipforge.evaluate.zeroshot_eval import evaluate_zeroshot

__all__ = [
    "classification_metrics", "confusion_matrix", "evaluate_linear_probe", "evaluate_retrieval",
    "evaluate_zeroshot", "mean_per_class_recall", "per_class_accuracy", "retrieval_metrics", "topk_accuracy",
]
