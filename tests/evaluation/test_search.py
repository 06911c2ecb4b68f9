"""Distance rows, k-NN search and the torch / faiss backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics import compute_distance_matrix

from reid_ir.evaluation import evaluate, knn, search
from reid_ir.evaluation.search import DistanceRows, smallest_k
from reid_ir.evaluation.sort_keys import float_order_bits


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_distance_rows_equal_torchreid_compute_distance_matrix(metric):
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(50, 32, generator=g), torch.randn(200, 32, generator=g) * 3
    ref = compute_distance_matrix(qf, gf, metric).numpy()
    rows = DistanceRows(qf, gf, metric, "torch")
    assert np.array_equal(rows.rows(0, 50), ref)  # same operations, same bits
    for s, e in [(0, 7), (7, 33), (33, 50)]:
        np.testing.assert_allclose(rows.rows(s, e), ref[s:e], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows.take(np.array([3, 1, 40])), ref[[3, 1, 40]], rtol=1e-6)
    faiss_rows = DistanceRows(qf, gf, metric, "faiss").rows(0, 50)
    np.testing.assert_allclose(faiss_rows, ref, rtol=1e-5, atol=1e-4)


def brute_knn(distmat, k):
    order = np.argsort(distmat, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distmat, order, 1), order


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_a_stable_brute_force_sort(backend, metric):
    g = torch.Generator().manual_seed(1)
    qf, gf = torch.randn(40, 16, generator=g), torch.randn(300, 16, generator=g)
    ref_d, ref_i = brute_knn(compute_distance_matrix(qf, gf, metric).numpy(), 12)
    d, i, rowmax = knn(qf, gf, 12, metric, backend, chunk_size=9, return_rowmax=True)
    assert np.array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-4)
    full = compute_distance_matrix(qf, gf, metric).numpy()
    np.testing.assert_allclose(rowmax, full.max(1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_breaks_ties_by_gallery_index(backend):
    rng = np.random.default_rng(2)
    qf = torch.tensor(rng.integers(0, 2, (25, 3)), dtype=torch.float32)
    gf = torch.tensor(rng.integers(0, 2, (80, 3)), dtype=torch.float32)
    ref_d, ref_i = brute_knn(compute_distance_matrix(qf, gf).numpy(), 10)
    d, i = knn(qf, gf, 10, "euclidean", backend)
    assert np.array_equal(i, ref_i) and np.array_equal(d, ref_d)


def test_smallest_k_clips_k_and_keeps_order():
    dist = np.array([[3.0, 1.0, 2.0], [0.0, 0.0, -1.0]], dtype=np.float32)
    vals, cols = smallest_k(dist, 5)
    assert cols.tolist() == [[1, 2, 0], [2, 0, 1]]
    assert vals.tolist() == [[1.0, 2.0, 3.0], [-1.0, 0.0, 0.0]]


def test_float_order_bits_preserve_float_order():
    vals = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 2.0000002, np.inf], np.float32)
    codes = float_order_bits(vals)
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)
    assert codes[3] == codes[4]  # -0.0 == 0.0
    assert np.all(np.diff(codes.astype(np.int64))[[0, 1, 2, 4, 5, 6, 7]] > 0)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_backends_give_identical_metrics(metric):
    rng = np.random.default_rng(3)
    qf, gf = rng.standard_normal((60, 20)), rng.standard_normal((400, 20))
    q_pids, g_pids = rng.integers(0, 15, 60), rng.integers(-1, 15, 400)
    q_cams, g_cams = rng.integers(0, 6, 60), rng.integers(0, 6, 400)
    a = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, backend="torch")
    b = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, backend="faiss")
    assert a.pop("backend") == "torch" and b.pop("backend") == "faiss"
    assert a == b


def test_auto_backend_takes_faiss_only_when_faiss_reports_a_gpu(monkeypatch):
    monkeypatch.setattr(search, "faiss_num_gpus", lambda: 0)
    assert search.resolve_backend("auto") == "torch"
    monkeypatch.setattr(search, "faiss_num_gpus", lambda: 1)
    assert search.resolve_backend("auto") == "faiss"
    assert search.resolve_backend("torch") == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        search.resolve_backend("gpu")


def test_torch_backend_needs_no_faiss():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["faiss"] = None  # any 'import faiss' now fails
        import numpy as np
        from reid_ir.evaluation import evaluate
        rng = np.random.default_rng(0)
        args = (rng.standard_normal((5, 4)), rng.standard_normal((20, 4)),
                rng.integers(0, 3, 5), rng.integers(0, 3, 20),
                np.zeros(5, int), np.ones(20, int))
        assert evaluate(*args, backend="torch")["backend"] == "torch"
        assert evaluate(*args, backend="auto")["backend"] == "torch"
        try:
            evaluate(*args, backend="faiss")
        except ImportError as exc:
            assert "faiss" in str(exc)
        else:
            raise AssertionError("backend='faiss' without faiss must fail")
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_gpu_faiss_path_is_wired_when_faiss_reports_a_gpu(monkeypatch):
    """No GPU here: stand in CPU faiss for the GPU functions and check they are used."""
    faiss = search.import_faiss()
    calls = []

    def pairwise_distance_gpu(res, xq, xb, D=None, metric=faiss.METRIC_L2, device=-1):
        calls.append("pairwise_distance_gpu")
        D[:] = faiss.pairwise_distances(xq, xb) if metric == faiss.METRIC_L2 else xq @ xb.T

    def knn_gpu(res, xq, xb, k, D=None, I=None, metric=faiss.METRIC_L2, device=-1):  # noqa: E741
        calls.append("knn_gpu")
        return faiss.knn(xq, xb, k, metric=metric)

    monkeypatch.setattr(search, "faiss_num_gpus", lambda: 1)
    monkeypatch.setattr(search, "_gpu_resources", object())
    monkeypatch.setattr(faiss, "pairwise_distance_gpu", pairwise_distance_gpu, raising=False)
    monkeypatch.setattr(faiss, "knn_gpu", knn_gpu, raising=False)
    rng = np.random.default_rng(4)
    args = (rng.standard_normal((30, 8)), rng.standard_normal((120, 8)), rng.integers(0, 6, 30),
            rng.integers(0, 6, 120), rng.integers(0, 3, 30), rng.integers(0, 3, 120))  # fmt: skip
    for metric in ("euclidean", "cosine"):
        gpu = evaluate(*args, metric=metric, backend="auto")
        cpu = evaluate(*args, metric=metric, backend="torch")
        assert gpu.pop("backend") == "faiss" and cpu.pop("backend") == "torch"
        assert gpu == cpu
    q, g = torch.tensor(args[0], dtype=torch.float32), torch.tensor(args[1], dtype=torch.float32)
    assert np.array_equal(knn(q, g, 5)[1], knn(q, g, 5, backend="torch")[1])
    assert {"pairwise_distance_gpu", "knn_gpu"} <= set(calls)


def test_smallest_k_on_wide_rows_including_rows_the_sample_misleads():
    rng = np.random.default_rng(5)
    dist = rng.random((6, 5000), dtype=np.float32)
    starts = np.linspace(0, 5000 - 64, 16).astype(int)  # the sampled column blocks
    dist[0, starts[:10]] = 1e-6  # 10 tiny values inside the sample: its threshold is too low
    dist[1, 3:40] = 0.5  # ties
    vals, cols = smallest_k(dist, 21)
    ref_d, ref_i = brute_knn(dist, 21)
    assert np.array_equal(cols, ref_i) and np.array_equal(vals, ref_d)
