"""Ranked-result images and their HTML index."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from reid_ir.evaluation import topk_indices, write_ranked_results
from reid_ir.evaluation.visrank import (
    BORDER,
    GREEN,
    GREY,
    GRID_SPACING,
    QUERY_EXTRA_SPACING,
    RED,
    draw_ranked_row,
)

W, H = 16, 32


def make_images(tmp_path, n, prefix):
    paths = []
    for i in range(n):
        p = tmp_path / f"{prefix}_{i:03d}.png"
        img = np.full((40, 20, 3), (37 * i) % 255, np.uint8)
        img[:, :, 2] = 200  # coloured, so greying is visible
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    return paths


def cell(grid, rank):
    start = rank * W + rank * GRID_SPACING + QUERY_EXTRA_SPACING
    return grid[:, start : start + W]


def test_topk_skips_same_camera_matches_keeps_junk_and_sorts_by_distance():
    qf = torch.tensor([[0.0], [10.0]])
    gf = torch.tensor([[1.0], [0.5], [2.0], [0.2], [3.0], [1.0]])
    g_pids = [1, 1, 2, -1, 1, 3]
    g_cams = [1, 0, 1, 1, 1, 1]  # item 1: query 0's pid and camera -> skipped
    top = topk_indices(qf, gf, [1, 2], g_pids, [0, 0], g_cams, k=4)
    assert top[0].tolist() == [3, 0, 5, 2]  # 0.2 (junk), 1.0 (idx 0 before idx 5), 2.0
    assert top[1].tolist() == [4, 2, 0, 5]
    few = topk_indices(qf, gf, [1, 2], g_pids, [0, 0], g_cams, k=9, query_indices=[0])
    assert few.shape == (1, 9) and few[0].tolist()[-4:] == [-1] * 4


def test_ranked_row_has_green_red_and_grey_borders(tmp_path):
    q = make_images(tmp_path, 1, "q")[0]
    g = make_images(tmp_path, 3, "g")
    grid = draw_ranked_row((q, 1, 0), [(g[0], 1, 1), (g[1], 2, 1), (g[2], -1, 1)], W, H)
    assert grid.shape == (H, 4 * W + 3 * GRID_SPACING + QUERY_EXTRA_SPACING, 3)
    assert tuple(cell(grid, 1)[0, 0]) == GREEN
    assert tuple(cell(grid, 2)[0, 0]) == RED
    assert tuple(cell(grid, 3)[0, 0]) == GREY
    inner = cell(grid, 3)[H // 2, W // 2]
    assert inner[0] == inner[1] == inner[2]  # junk image greyed out
    assert tuple(grid[0, 0]) == (0, 0, 0)  # query: black border
    assert BORDER > 0


def test_write_ranked_results_writes_one_image_per_query_and_an_index(tmp_path, caplog):
    rng = np.random.default_rng(0)
    qp = make_images(tmp_path, 6, "q")
    gp = make_images(tmp_path, 30, "g")
    gp[4] = str(tmp_path / "does_not_exist.png")
    query = [(p, i % 3 + 1, 0, 0) for i, p in enumerate(qp)]
    gallery = [(p, i % 4, 1, 0) for i, p in enumerate(gp)]
    gallery[7] = (gp[7], -1, 1, 0)
    qf, gf = rng.standard_normal((6, 8)), rng.standard_normal((30, 8))
    gf[4] = qf[0]  # the unreadable image is query 0's nearest neighbour
    out_dir = tmp_path / "visrank"
    with caplog.at_level(logging.WARNING):
        index = write_ranked_results(
            qf, gf, query, gallery, out_dir, topk=5, num_queries=4, width=W, height=H
        )
    images = sorted(p.name for p in out_dir.glob("*.jpg"))
    assert len(images) == 4 and images[0].startswith("00000_q_000")
    html = (out_dir / "index.html").read_text()
    assert index == str(out_dir / "index.html")
    assert all(name in html for name in images)
    img = cv2.imread(str(out_dir / images[0]))
    assert img.shape == (H, 6 * W + 5 * GRID_SPACING + QUERY_EXTRA_SPACING, 3)
    assert "could not be read (first: " in caplog.text  # a placeholder, not a crash
    assert "does_not_exist.png" in caplog.text


def test_topk_with_rerank_follows_the_re_ranked_distances():
    from reid_ir.evaluation import re_ranking

    rng = np.random.default_rng(1)
    qf, gf = rng.standard_normal((8, 6)), rng.standard_normal((50, 6))
    q_pids, g_pids = rng.integers(1, 5, 8), rng.integers(1, 5, 50)
    q_cams, g_cams = rng.integers(0, 2, 8), rng.integers(0, 2, 50)
    top = topk_indices(qf, gf, q_pids, g_pids, q_cams, g_cams, k=5, rerank=True)
    dist = re_ranking(qf, gf).astype(np.float64)
    dist[(g_pids[None] == q_pids[:, None]) & (g_cams[None] == q_cams[:, None])] = np.inf
    assert np.array_equal(top, np.argsort(dist, axis=1, kind="stable")[:, :5])
