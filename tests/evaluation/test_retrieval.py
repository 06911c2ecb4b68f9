"""The evaluator against torchreid 0.2.5's pure-Python evaluate_rank (the oracle)."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # "Cython evaluation ... unavailable"
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics import compute_distance_matrix
    from torchreid.reid.metrics.rank import evaluate_rank as torchreid_evaluate_rank

from reid_ir.evaluation import evaluate, evaluate_rank, ranking


@pytest.fixture(params=[1, 5, ranking.HEAD_CANDIDATES], ids=["head1", "head5", "head-default"])
def head(request, monkeypatch):
    """How many negatives per query are sorted; the rest of the positives are counted.

    Small values push most positives onto the counting path, so both paths meet
    the oracle.
    """
    monkeypatch.setattr(ranking, "HEAD_CANDIDATES", request.param)
    return request.param


def torchreid_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    return torchreid_evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, use_cython=False
    )


def market_like(seed, num_ids=12, num_q=40, num_g=160, dim=24, num_cams=6, junk=15, distractors=20):
    """Identity clusters seen by 6 cameras, plus distractors (pid 0) and junk (pid -1)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim)) * 1.2
    cams = rng.standard_normal((num_cams, dim)) * 0.5

    def sample(pids, camids):
        return centers[pids - 1] + cams[camids] + rng.standard_normal((len(pids), dim))

    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_cams = rng.integers(0, num_cams, num_q)
    g_pids = rng.integers(1, num_ids + 1, num_g)
    g_cams = rng.integers(0, num_cams, num_g)
    gf = sample(g_pids, g_cams)
    extra = rng.standard_normal((junk + distractors, dim)) * 1.5
    gf = np.concatenate([gf, extra])
    g_pids = np.concatenate([g_pids, np.zeros(distractors, int), -np.ones(junk, int)])
    g_cams = np.concatenate([g_cams, rng.integers(0, num_cams, junk + distractors)])
    perm = rng.permutation(len(g_pids))  # junk and distractors anywhere in the gallery
    qf = torch.tensor(sample(q_pids, q_cams), dtype=torch.float32)
    gf = torch.tensor(gf[perm], dtype=torch.float32)
    return qf, gf, q_pids, g_pids[perm], q_cams, g_cams[perm]


def valid_queries(q_pids, g_pids, q_cams, g_cams):
    return np.array(
        [np.any((g_pids == p) & (g_cams != c)) for p, c in zip(q_pids, q_cams, strict=True)]
    )


def without_junk(g_pids, g_cams):
    keep = g_pids != -1
    return keep, g_pids[keep], g_cams[keep]


def assert_no_ties_with_positives(distmat, q_pids, g_pids):
    """Fixture data must be tie-free for exact parity (torchreid breaks ties arbitrarily)."""
    for i in range(len(q_pids)):
        row = distmat[i]
        pos = row[g_pids == q_pids[i]]
        assert not np.isin(pos, row[g_pids != q_pids[i]]).any()


@pytest.mark.parametrize("seed", range(6))
def test_evaluate_rank_matches_torchreid_on_random_distances(seed, head):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(5, 60)), int(rng.integers(60, 300))
    q_pids, g_pids = rng.integers(0, 10, nq), rng.integers(0, 10, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    for c in range(3):  # every query gets a valid match: torchreid asserts otherwise
        g_pids[c * 10 : c * 10 + 10] = np.arange(10)
        g_cams[c * 10 : c * 10 + 10] = c
    distmat = rng.random((nq, ng), dtype=np.float32)
    max_rank = int(rng.integers(1, 50))
    cmc_ref, map_ref = torchreid_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    for dm in (distmat, distmat.astype(np.float64), torch.from_numpy(distmat)):
        cmc, mAP = evaluate_rank(dm, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
        assert cmc.dtype == np.float32 and cmc.shape == cmc_ref.shape
        np.testing.assert_allclose(cmc, cmc_ref, rtol=0, atol=1e-6)
        assert abs(mAP - map_ref) < 1e-6


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_evaluate_from_features_matches_torchreid_on_market_shaped_data(
    seed, metric, normalize, head
):
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(seed)
    # torchreid's Market-1501 loader drops junk; its evaluator skips nothing, so give it valid queries
    keep, gp, gc = without_junk(g_pids, g_cams)
    valid = valid_queries(q_pids, gp, q_cams, gc)
    q_ref, g_ref = qf, gf[torch.from_numpy(keep)]
    if normalize:
        q_ref, g_ref = torch.nn.functional.normalize(q_ref), torch.nn.functional.normalize(g_ref)
    distmat = compute_distance_matrix(q_ref, g_ref, metric).numpy()
    assert_no_ties_with_positives(distmat, q_pids, gp)
    cmc_ref, map_ref = torchreid_rank(distmat[valid], q_pids[valid], gp, q_cams[valid], gc)

    res = evaluate(
        qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, normalize=normalize, backend="torch"
    )
    np.testing.assert_allclose(res["cmc"], cmc_ref, rtol=0, atol=1e-6)
    assert abs(res["mAP"] - map_ref) < 1e-6
    assert res["rank1"] == pytest.approx(float(cmc_ref[0]), abs=1e-6)
    assert res["rank5"] == pytest.approx(float(cmc_ref[4]), abs=1e-6)
    assert res["num_valid_queries"] == int(valid.sum())
    assert res["num_skipped_queries"] == int((~valid).sum())
    assert res["num_junk"] == int((~keep).sum()) and res["num_gallery"] == int(keep.sum())


def test_queries_without_valid_match_are_skipped_and_counted(head):
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(7)
    q_pids = q_pids.copy()
    q_pids[:5] = 99  # identity absent from the gallery
    q_pids[5] = -1  # a junk query has no valid match either
    only_same_cam = g_pids == q_pids[6]  # query 6: its identity only in its own camera
    g_cams = np.where(only_same_cam, q_cams[6], g_cams)
    res = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch")
    keep, gp, gc = without_junk(g_pids, g_cams)
    valid = valid_queries(q_pids, gp, q_cams, gc)
    assert not valid[:7].any() and valid.sum() > 20
    assert res["num_skipped_queries"] == int((~valid).sum())
    assert res["num_valid_queries"] == int(valid.sum())
    distmat = compute_distance_matrix(qf, gf[torch.from_numpy(keep)]).numpy()
    cmc_ref, map_ref = torchreid_rank(distmat[valid], q_pids[valid], gp, q_cams[valid], gc)
    np.testing.assert_allclose(res["cmc"], cmc_ref, rtol=0, atol=1e-6)
    assert abs(res["mAP"] - map_ref) < 1e-6
    cmc, mAP = evaluate_rank(distmat, q_pids, gp, q_cams, gc)
    np.testing.assert_allclose(cmc, cmc_ref, rtol=0, atol=1e-6)
    assert abs(mAP - map_ref) < 1e-6


def test_junk_anywhere_in_the_gallery_changes_nothing():
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(3, junk=0)
    base = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch")
    # junk copies of positives, placed first and closer to each query than anything else
    junk_f = qf[:10] * 1.0001
    gf2 = torch.cat([junk_f, gf])
    g_pids2 = np.concatenate([-np.ones(10, int), g_pids])
    g_cams2 = np.concatenate([(q_cams[:10] + 1) % 6, g_cams])
    res = evaluate(qf, gf2, q_pids, g_pids2, q_cams, g_cams2, backend="torch")
    for key in ("cmc", "mAP", "mINP", "num_valid_queries"):
        assert res[key] == base[key]
    assert res["num_junk"] == 10


def test_distractors_are_ordinary_negatives():
    # one query, gallery: a distractor (pid 0) closest, then the true match
    qf = torch.tensor([[0.0, 0.0]])
    gf = torch.tensor([[0.1, 0.0], [0.2, 0.0], [5.0, 0.0]])
    res = evaluate(qf, gf, [3], [0, 3, 4], [0], [1, 1, 1], ranks=(1, 2), backend="torch")
    assert res["rank1"] == 0.0 and res["rank2"] == 1.0
    assert res["mAP"] == pytest.approx(0.5)


def test_hand_computed_ap_and_inp():
    # valid ranking (after dropping the same-camera match): + - + - - +
    qf = torch.tensor([[0.0]])
    gf = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [0.5]])
    g_pids = [1, 2, 1, 2, 2, 1, 1]
    g_cams = [1, 1, 1, 1, 1, 1, 0]  # the last one: same pid and camera as the query -> ignored
    res = evaluate(qf, gf, [1], g_pids, [0], g_cams, ranks=(1, 2, 3), backend="torch")
    assert res["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert res["mINP"] == pytest.approx(3 / 6)  # positives / rank of the hardest positive
    assert res["cmc"] == [1.0] * 7  # torchreid's length: min(max_rank, gallery size)
    cmc, mAP = evaluate_rank(np.array([[1, 2, 3, 4, 5, 6, 0.5]]), [1], g_pids, [0], g_cams)
    assert mAP == pytest.approx(res["mAP"]) and len(cmc) == 7


def stable_rank_transform(distmat):
    """Distinct per-row values with the order of a stable sort (ties -> lower index first)."""
    order = np.argsort(distmat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(distmat.shape[1])[None, :], axis=1)
    return ranks.astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_ties_are_ordered_by_gallery_index(seed, head):
    rng = np.random.default_rng(seed)
    # small integer features: many exactly equal distances
    qf = torch.tensor(rng.integers(0, 3, (30, 3)), dtype=torch.float32)
    gf = torch.tensor(rng.integers(0, 3, (120, 3)), dtype=torch.float32)
    q_pids, g_pids = rng.integers(1, 5, 30), rng.integers(1, 5, 120)
    q_cams, g_cams = rng.integers(0, 2, 30), rng.integers(0, 2, 120)
    distmat = compute_distance_matrix(qf, gf).numpy()
    valid = valid_queries(q_pids, g_pids, q_cams, g_cams)
    oracle = stable_rank_transform(distmat)[valid]  # tie-free, same order as our rule
    cmc_ref, map_ref = torchreid_rank(oracle, q_pids[valid], g_pids, q_cams[valid], g_cams, 20)
    for backend in ("torch", "faiss"):
        res = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=20, backend=backend)
        np.testing.assert_allclose(res["cmc"], cmc_ref, rtol=0, atol=1e-6)
        assert abs(res["mAP"] - map_ref) < 1e-6
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    np.testing.assert_allclose(cmc, cmc_ref, rtol=0, atol=1e-6)
    assert abs(mAP - map_ref) < 1e-6


def test_tie_between_positive_and_negative_puts_lower_index_first(head):
    distmat = np.array([[1.0, 1.0, 1.0]], dtype=np.float32)
    # negative at index 0, positive at index 1: the positive is second
    assert evaluate_rank(distmat, [1], [2, 1, 2], [0], [1, 1, 1])[1] == pytest.approx(0.5)
    # positive at index 0: first
    assert evaluate_rank(distmat, [1], [1, 2, 2], [0], [1, 1, 1])[1] == pytest.approx(1.0)


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_chunk_size_does_not_change_results(chunk_size):
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(11)
    ref = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch", chunk_size=4096)
    res = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch", chunk_size=chunk_size)
    assert res == ref


@pytest.mark.parametrize("workers", [2, 3])
def test_ranking_rows_in_threads_gives_the_same_result(workers, monkeypatch):
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(12)
    ref = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch")
    monkeypatch.setattr(ranking.torch, "get_num_threads", lambda: workers)
    assert evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="torch") == ref


def test_cmc_is_padded_when_the_gallery_is_smaller_than_max_rank():
    # torchreid fails here (ragged CMC rows); a found match stays found at larger ranks
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]], dtype=np.float32)
    # query 0: item 0 ignored (same pid and camera), item 1 right; query 1: item 2 second
    cmc, mAP = evaluate_rank(distmat, [1, 2], [1, 1, 2], [0, 0], [0, 1, 1], max_rank=50)
    assert cmc.tolist() == [0.5, 1.0, 1.0]
    assert mAP == pytest.approx((1 + 1 / 2) / 2)
    res = evaluate(
        torch.tensor([[0.0], [1.0]]), torch.tensor([[0.1], [0.2], [0.9]]),
        [1, 2], [1, 1, 2], [0, 0], [0, 1, 1], ranks=(1, 5, 100), backend="torch",
    )  # fmt: skip
    assert res["rank100"] == 1.0 and len(res["cmc"]) == 3


def test_no_valid_query_gives_zeros_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="reid_ir.evaluation.retrieval"):
        res = evaluate(torch.zeros(2, 2), torch.ones(3, 2), [5, 6], [1, 2, 3], [0, 0], [1, 1, 1])
    assert res["num_valid_queries"] == 0 and res["num_skipped_queries"] == 2
    assert res["mAP"] == 0.0 and res["rank1"] == 0.0
    assert "no query has a valid match" in caplog.text


def test_result_holds_plain_python_types():
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(0)
    res = evaluate(qf.numpy(), gf.numpy(), list(q_pids), torch.from_numpy(g_pids), q_cams, g_cams)
    json.dumps(res)
    assert isinstance(res["cmc"], list) and all(type(x) is float for x in res["cmc"])
    assert type(res["mAP"]) is float and type(res["num_valid_queries"]) is int
    assert len(res["cmc"]) == 50
    assert {"rank1", "rank5", "rank10", "rank20", "mINP", "num_skipped_queries"} <= set(res)


BAD_INPUTS = [
    ({"qf": torch.tensor([[float("nan"), 0.0]])}, "qf contains NaN or inf"),
    ({"gf": torch.tensor([[float("inf"), 0.0]] * 3)}, "gf contains NaN or inf"),
    ({"qf": torch.zeros(0, 2), "q_pids": [], "q_camids": []}, "qf must be non-empty"),
    ({"gf": torch.zeros(0, 2), "g_pids": [], "g_camids": []}, "gf must be non-empty"),
    ({"qf": torch.zeros(2)}, "qf must be 2-D"),
    ({"gf": torch.zeros(3, 5)}, "same feature size"),
    ({"q_pids": [1, 2]}, "q_pids must have 1 items"),
    ({"g_camids": [0, 1]}, "g_camids must have 3 items"),
    ({"g_pids": [0.5, 1, 2]}, "g_pids must hold integers"),
    ({"metric": "manhattan"}, "metric must be one of"),
    ({"backend": "cuda"}, "backend must be one of"),
    ({"ranks": (0, 5)}, "ranks must be"),
    ({"max_rank": 0}, "max_rank must be"),
    ({"chunk_size": 0}, "chunk_size must be"),
    ({"g_pids": [-1, -1, -1]}, "every gallery item is junk"),
    ({"gf": torch.full((3, 2), 3e38)}, "distances overflow float32"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS)
def test_bad_input_raises_value_error_naming_the_argument(override, message):
    args = {
        "qf": torch.zeros(1, 2), "gf": torch.ones(3, 2), "q_pids": [1], "g_pids": [1, 2, 3],
        "q_camids": [0], "g_camids": [1, 1, 1],
    }  # fmt: skip
    args.update(override)
    with pytest.raises(ValueError, match=message):
        evaluate(**args)


def test_evaluate_rank_rejects_bad_distmat():
    with pytest.raises(ValueError, match="distmat contains NaN"):
        evaluate_rank(np.array([[np.nan, 1.0]]), [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="distmat must be a non-empty 2-D"):
        evaluate_rank(np.zeros((0, 3)), [], [1, 2, 3], [], [1, 1, 1])
    with pytest.raises(ValueError, match="g_pids must have 2 items"):
        evaluate_rank(np.zeros((1, 2)), [1], [1, 2, 3], [0], [1, 1])
