"""The evaluation settings of a run, named as the config names them (``test.*``)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How a run evaluates; each field is the ``test.*`` key of the same name.

    ``knc_k`` is ``loss.clmle.knc_k`` (CLMLE's kNC accuracy, with ``test.knc``).
    """

    dist_metric: str = "euclidean"
    normalize_feature: bool = False
    ranks: tuple[int, ...] = (1, 5, 10, 20)
    max_rank: int = 50
    chunk_size: int = 1024
    backend: str = "auto"
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    visrank_topk: int = 10
    knc: bool = False
    knc_k: int = 5

    @classmethod
    def from_cfg(cls, cfg: Any) -> EvalSettings:
        """The settings of ``cfg`` (its ``test.*`` keys and ``loss.clmle.knc_k``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"knc_k", "ranks"}
        return cls(
            **{name: cfg.test[name] for name in names},
            ranks=tuple(cfg.test.ranks),
            knc_k=cfg.loss.clmle.knc_k,
        )

    def evaluate_kwargs(self) -> dict:
        """Keyword arguments of :func:`reid_ir.evaluation.evaluate` (which says metric, normalize)."""
        return {
            "metric": self.dist_metric,
            "normalize": self.normalize_feature,
            "ranks": self.ranks,
            "max_rank": self.max_rank,
            "chunk_size": self.chunk_size,
            "backend": self.backend,
            "rerank": self.rerank,
            "rerank_k1": self.rerank_k1,
            "rerank_k2": self.rerank_k2,
            "rerank_lambda": self.rerank_lambda,
        }
