"""Full-ranking evaluation: Recall/NDCG/Precision/Hit/MAP@K, with per-group breakdowns."""

from graphrec.eval.evaluator import EvalResult, Evaluator, popularity_scorer
from graphrec.eval.metrics import METRICS, per_user_metrics

__all__ = ["METRICS", "EvalResult", "Evaluator", "per_user_metrics", "popularity_scorer"]
