"""k-reciprocal re-ranking against torchreid's re_ranking (the oracle)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics import compute_distance_matrix
    from torchreid.reid.metrics.rank import evaluate_rank as torchreid_evaluate_rank
    from torchreid.reid.utils import re_ranking as torchreid_re_ranking

from reid_ir.evaluation import evaluate, re_ranking


def clustered(seed, nq, ng, dim=16, ids=8):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, dim)) * 1.5
    q_pids, g_pids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    qf = torch.tensor(centers[q_pids] + rng.standard_normal((nq, dim)), dtype=torch.float32)
    gf = torch.tensor(centers[g_pids] + rng.standard_normal((ng, dim)), dtype=torch.float32)
    return qf, gf, q_pids + 1, g_pids + 1, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


def torchreid_rerank(qf, gf, metric, k1, k2, lam):
    return torchreid_re_ranking(
        compute_distance_matrix(qf, gf, metric).numpy(),
        compute_distance_matrix(qf, qf, metric).numpy(),
        compute_distance_matrix(gf, gf, metric).numpy(),
        k1=k1,
        k2=k2,
        lambda_value=lam,
    )


PARAMS = [(20, 6, 0.3), (5, 3, 0.5), (3, 1, 0.1), (7, 10, 0.0)]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize(("k1", "k2", "lam"), PARAMS)
def test_re_ranking_matches_torchreid(metric, k1, k2, lam, backend):
    qf, gf, *_ = clustered(k1 + k2, 25, 90)
    ref = torchreid_rerank(qf, gf, metric, k1, k2, lam)
    ours = re_ranking(qf, gf, metric, k1, k2, lam, backend=backend, chunk_size=7)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    if lam > 0:  # lambda = 0 leaves the Jaccard term alone: many exact ties, order undefined
        # the ranking that matters agrees too (no near-ties in this data)
        assert np.array_equal(np.argsort(ours, 1, kind="stable"), np.argsort(ref, 1, kind="stable"))


def test_re_ranking_with_fewer_items_than_k1():
    qf, gf, *_ = clustered(1, 4, 9)
    ref = torchreid_rerank(qf, gf, "euclidean", 20, 6, 0.3)
    np.testing.assert_allclose(re_ranking(qf, gf, k1=20, k2=6), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_evaluate_with_rerank_matches_torchreid_metrics(metric):
    qf, gf, q_pids, g_pids, q_cams, g_cams = clustered(5, 30, 150)
    valid = np.array(
        [np.any((g_pids == p) & (g_cams != c)) for p, c in zip(q_pids, q_cams, strict=True)]
    )
    ref = torchreid_rerank(qf, gf, metric, 20, 6, 0.3)[valid]
    cmc_ref, map_ref = torchreid_evaluate_rank(
        ref, q_pids[valid], g_pids, q_cams[valid], g_cams, max_rank=20, use_cython=False
    )
    for backend in ("torch", "faiss"):
        res = evaluate(
            qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, rerank=True,
            max_rank=20, backend=backend,
        )  # fmt: skip
        np.testing.assert_allclose(res["cmc"], cmc_ref, rtol=0, atol=1e-6)
        assert abs(res["mAP"] - map_ref) < 1e-6
        assert res["rerank"] is True


def test_rerank_ignores_junk_like_the_evaluation():
    qf, gf, q_pids, g_pids, q_cams, g_cams = clustered(6, 20, 80)
    base = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=True)
    gf2 = torch.cat([gf, gf[:5] + 0.01])
    res = evaluate(
        qf, gf2, q_pids, np.concatenate([g_pids, -np.ones(5, int)]), q_cams,
        np.concatenate([g_cams, g_cams[:5]]), rerank=True,
    )  # fmt: skip
    assert res["cmc"] == base["cmc"] and res["mAP"] == base["mAP"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k1": 0}, "rerank_k1"), ({"k2": 0}, "rerank_k2"), ({"lambda_value": 1.5}, "rerank_lambda")],
)
def test_bad_rerank_parameters_raise(kwargs, message):
    qf, gf, *_ = clustered(0, 5, 10)
    with pytest.raises(ValueError, match=message):
        re_ranking(qf, gf, **kwargs)
