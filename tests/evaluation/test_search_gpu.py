"""GPU search paths give the CPU's results: faiss on the GPU, and the torch backend on CUDA.

Each test runs only where its GPU path exists (faiss reporting a GPU, or CUDA for
torch) and is skipped with the reason elsewhere. The CPU-only wiring of the
faiss GPU calls is tested in ``test_search.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_ir.evaluation import evaluate, knn, re_ranking, search
from reid_ir.evaluation.search import DistanceRows

needs_faiss_gpu = pytest.mark.skipif(
    search.faiss_num_gpus() == 0,
    reason="faiss reports no GPU (faiss-cpu installed, or no CUDA device): GPU path not taken",
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the torch backend runs on the CPU"
)
METRICS = ["euclidean", "cosine"]


def clustered(seed: int, nq: int = 300, ng: int = 2000, dim: int = 64, ids: int = 60):
    """Query/gallery features around ``ids`` identity centers, with pids and camids."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, dim)) * 1.5
    q_pids, g_pids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    qf = torch.tensor(centers[q_pids] + rng.standard_normal((nq, dim)), dtype=torch.float32)
    gf = torch.tensor(centers[g_pids] + rng.standard_normal((ng, dim)), dtype=torch.float32)
    return qf, gf, q_pids + 1, g_pids + 1, rng.integers(0, 6, nq), rng.integers(0, 6, ng)


def assert_same_metrics(a: dict, b: dict) -> None:
    for key in ("mAP", "mINP", "rank1", "rank5", "num_valid_queries"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=1e-6)


@needs_faiss_gpu
@pytest.mark.parametrize("metric", METRICS)
def test_faiss_gpu_distances_and_knn_equal_the_cpu_paths(metric):
    qf, gf, *_ = clustered(0)
    gpu_rows = DistanceRows(qf, gf, metric, "faiss").rows(0, len(qf))
    cpu_rows = DistanceRows(qf, gf, metric, "torch").rows(0, len(qf))
    np.testing.assert_allclose(gpu_rows, cpu_rows, rtol=1e-5, atol=1e-4)
    d_gpu, i_gpu, max_gpu = knn(qf, gf, 50, metric, "faiss", return_rowmax=True)
    d_cpu, i_cpu, max_cpu = knn(qf, gf, 50, metric, "torch", return_rowmax=True)
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(max_gpu, max_cpu, rtol=1e-5, atol=1e-4)
    assert (i_gpu == i_cpu).mean() > 0.999  # a differing index is a near-tie swap
    swapped = i_gpu != i_cpu
    np.testing.assert_allclose(d_gpu[swapped], d_cpu[swapped], rtol=1e-5, atol=1e-4)


@needs_faiss_gpu
@pytest.mark.parametrize("metric", METRICS)
def test_faiss_gpu_evaluation_and_reranking_equal_the_cpu_paths(metric):
    assert search.resolve_backend("auto") == "faiss"
    args = clustered(1)
    gpu = evaluate(*args, metric=metric, backend="faiss")
    cpu = evaluate(*args, metric=metric, backend="torch")
    assert_same_metrics(gpu, cpu)
    qf, gf = args[0][:100], args[1][:600]
    rr_gpu = re_ranking(qf, gf, metric, backend="faiss")
    rr_cpu = re_ranking(qf, gf, metric, backend="torch")
    np.testing.assert_allclose(rr_gpu, rr_cpu, rtol=1e-4, atol=1e-4)
    rerank_gpu = evaluate(*args, metric=metric, backend="faiss", rerank=True)
    rerank_cpu = evaluate(*args, metric=metric, backend="torch", rerank=True)
    assert_same_metrics(rerank_gpu, rerank_cpu)


@needs_cuda
@pytest.mark.parametrize("metric", METRICS)
def test_torch_backend_on_cuda_equals_the_cpu(metric):
    args = clustered(2)
    qf, gf = args[0], args[1]
    cuda_rows = DistanceRows(qf.cuda(), gf.cuda(), metric, "torch").rows(0, len(qf))
    cpu_rows = DistanceRows(qf, gf, metric, "torch").rows(0, len(qf))
    np.testing.assert_allclose(cuda_rows, cpu_rows, rtol=1e-5, atol=1e-4)
    on_cuda = evaluate(qf.cuda(), gf.cuda(), *args[2:], metric=metric, backend="torch")
    on_cpu = evaluate(*args, metric=metric, backend="torch")
    assert_same_metrics(on_cuda, on_cpu)
    rr_cuda = re_ranking(qf[:100].cuda(), gf[:600].cuda(), metric, backend="torch")
    rr_cpu = re_ranking(qf[:100], gf[:600], metric, backend="torch")
    np.testing.assert_allclose(rr_cuda, rr_cpu, rtol=1e-4, atol=1e-4)
