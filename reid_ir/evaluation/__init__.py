"""Retrieval evaluation: features -> faiss/torch search -> CMC, mAP, mINP (+ re-ranking).

Entry points:

* :func:`evaluate` - metrics from query/gallery features (what the engine calls).
* :func:`evaluate_rank` - drop-in for ``torchreid.reid.metrics.evaluate_rank``
  on a distance matrix.
* :func:`re_ranking` - k-reciprocal re-ranked distances from features.
* :func:`topk_indices` / :func:`write_ranked_results` - ranked lists and their images.

Importing this package imports neither faiss, scipy nor opencv; ``re_ranking``
and the visrank functions load their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from reid_ir.evaluation.retrieval import JUNK_PID, evaluate, evaluate_rank
from reid_ir.evaluation.search import BACKENDS, METRICS, DistanceRows, knn, resolve_backend

_LAZY = {
    "re_ranking": "reid_ir.evaluation.rerank",
    "KReciprocalRows": "reid_ir.evaluation.rerank",
    "topk_indices": "reid_ir.evaluation.visrank",
    "write_ranked_results": "reid_ir.evaluation.visrank",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "JUNK_PID",
    "METRICS",
    "DistanceRows",
    "KReciprocalRows",
    "evaluate",
    "evaluate_rank",
    "knn",
    "re_ranking",
    "resolve_backend",
    "topk_indices",
    "write_ranked_results",
]
