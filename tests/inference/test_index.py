"""GalleryIndex: exact search equals brute force, saved indexes answer the same, recall is measured."""

from __future__ import annotations

import numpy as np
import pytest

from reid_ir.inference.index import GalleryIndex


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 32))
    gallery = unit(np.repeat(centers, 50, axis=0) + 0.3 * rng.standard_normal((2000, 32)))
    queries = unit(centers[rng.integers(0, 40, 60)] + 0.3 * rng.standard_normal((60, 32)))
    return gallery, queries, [f"g/{i:05d}.jpg" for i in range(len(gallery))]


def test_exact_index_equals_brute_force_cosine(data):
    gallery, queries, paths = data
    sims, idx = GalleryIndex.build(gallery * 3.0, paths).search(
        queries, 7
    )  # normalised on the way in
    full = queries.astype(np.float64) @ gallery.T.astype(np.float64)
    order = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(sims, np.take_along_axis(full, order, 1), atol=1e-5)


def test_equal_similarities_are_ordered_by_gallery_index():
    g = unit(np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32))
    _, idx = GalleryIndex.build(g, ["a", "b", "c", "d"]).search(np.array([[1.0, 0.0]]), 4)
    assert idx.tolist() == [[0, 2, 3, 1]]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_saved_index_reloads_with_paths_labels_and_the_same_answers(data, tmp_path, kind):
    gallery, queries, paths = data
    labels = (np.arange(len(paths)) // 50, np.arange(len(paths)) % 3)
    index = GalleryIndex.build(gallery, paths, kind, nlist=20, labels=labels, info={"model": "x"})
    index.save(tmp_path / kind)
    again = GalleryIndex.load(tmp_path / kind)
    assert again.paths == paths and again.kind == kind and again.info == {"model": "x"}
    np.testing.assert_array_equal(again.labels[0], labels[0])
    for a, b in zip(index.search(queries, 10), again.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_approximate_recall_is_measured_against_exact_search(data):
    gallery, queries, paths = data
    all_lists = GalleryIndex.build(gallery, paths, "ivf", nlist=40, nprobe=40)
    one_list = GalleryIndex.build(gallery, paths, "ivf", nlist=40, nprobe=1)
    assert all_lists.recall_at_k(queries, 10) == 1.0
    assert one_list.recall_at_k(queries, 10) < 1.0
    hnsw = GalleryIndex.build(gallery, paths, "hnsw")
    recall, n = hnsw.self_recall_at_k(10, sample=100)
    assert n == 100 and 0.9 <= recall <= 1.0
    assert GalleryIndex.build(gallery, paths).recall_at_k(queries, 10) == 1.0


def test_bad_input_is_refused_with_what_was_expected(data, tmp_path):
    gallery, queries, paths = data
    with pytest.raises(ValueError, match="paths"):
        GalleryIndex.build(gallery, paths[:-1])
    with pytest.raises(ValueError, match="unknown index kind"):
        GalleryIndex.build(gallery, paths, "lsh")
    index = GalleryIndex.build(gallery, paths)
    with pytest.raises(ValueError, match="32-d"):
        index.search(queries[:, :16], 5)
    bad = gallery.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GalleryIndex.build(bad, paths)
    with pytest.raises(FileNotFoundError, match="index.faiss"):
        GalleryIndex.load(tmp_path)
