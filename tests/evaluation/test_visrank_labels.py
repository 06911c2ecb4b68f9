"""visrank says which camera (as the file names do: c1), rank and distance each image has."""

from __future__ import annotations

import cv2
import numpy as np

from reid_ir.evaluation import topk_indices, write_ranked_results
from reid_ir.evaluation.visrank import BORDER, camera_label, draw_ranked_row

W, H = 64, 128


def _images(tmp_path, n, prefix):
    paths = []
    for i in range(n):
        p = tmp_path / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(p), np.full((40, 20, 3), (37 * i) % 255, np.uint8))
        paths.append(str(p))
    return paths


def test_cameras_are_named_as_in_the_file_names():
    assert camera_label(0) == "c1" and camera_label(5) == "c6"


def test_topk_returns_the_distances_of_the_listed_items():
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((3, 4)), rng.standard_normal((7, 4))
    idx, dist = topk_indices(
        qf, gf, [1, 2, 3], [9] * 7, [0] * 3, [1] * 7, k=4, return_distances=True
    )
    full = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, np.take_along_axis(full, idx, axis=1), rtol=1e-4)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_each_gallery_image_is_captioned(tmp_path):
    q = _images(tmp_path, 1, "q")[0]
    g = _images(tmp_path, 2, "g")
    items = [(g[0], 1, 1), (g[1], 2, 0)]
    plain = draw_ranked_row((q, 1, 0), items, W, H)
    captioned = draw_ranked_row((q, 1, 0), items, W, H, distances=[0.25, 0.5])
    strip = slice(H - BORDER - 16, H - BORDER)
    assert not np.array_equal(plain[strip], captioned[strip])
    assert np.array_equal(plain[: H // 2], captioned[: H // 2]), "only the bottom strip changes"


def test_the_index_shows_1_based_cameras_ranks_and_distances(tmp_path):
    rng = np.random.default_rng(1)
    qp, gp = _images(tmp_path, 2, "q"), _images(tmp_path, 6, "g")
    query = [(p, i + 1, 0, 0) for i, p in enumerate(qp)]  # camid 0: file names say c1
    gallery = [(p, i % 2 + 1, 1, 0) for i, p in enumerate(gp)]
    qf, gf = rng.standard_normal((2, 8)), rng.standard_normal((6, 8))
    write_ranked_results(qf, gf, query, gallery, tmp_path / "vis", topk=3, width=W, height=H)
    page = (tmp_path / "vis" / "index.html").read_text()
    assert "<td>c1</td>" in page and "<td>0</td><td>1</td><td>0</td>" not in page
    _, dist = topk_indices(qf, gf, [1, 2], [it[1] for it in gallery], [0, 0], [1] * 6, k=3,
                           return_distances=True)  # fmt: skip
    assert f"1. c2 {dist[0, 0]:.4g}" in page
