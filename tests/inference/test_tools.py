"""The command lines end to end: extract -> index -> search -> JSON + HTML; resumable extraction."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_ir.inference import FeatureExtractor
from reid_ir.inference.index import GalleryIndex
from reid_ir.inference.store import extract_to_folder, load_features

REPO = Path(__file__).resolve().parents[2]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gallery_feats(run_dir, market_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats") / "gallery"
    argv = [
        "--run",
        str(run_dir),
        "--images",
        str(market_dir / "bounding_box_test"),
        "--out",
        str(out),
    ]
    assert load_tool("extract_features").main([*argv, "--device", "cpu"]) == 0
    return out


def test_extract_writes_features_paths_and_market_labels(gallery_feats, market_dir):
    feats, paths, labels, meta = load_features(gallery_feats)
    names = sorted(p.name for p in (market_dir / "bounding_box_test").glob("*.jpg"))
    assert [Path(p).name for p in paths] == names
    assert feats.shape == (len(names), meta["dim"]) and meta["complete"]
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    pid, cam = names[0].split("_")[:2]  # e.g. "0003", "c2s1"
    assert labels[0][0] == int(pid) and labels[1][0] == int(cam[1]) - 1
    assert not (gallery_feats / "parts").exists()


def test_search_finds_the_same_identity_first_on_an_easy_case(gallery_feats, run_dir, tmp_path):
    """Queries are slightly brightened copies of gallery images: the original must come first."""
    _, paths, labels, _ = load_features(gallery_feats)
    picks = [0, len(paths) // 2, len(paths) - 1]
    qdir = tmp_path / "queries"
    qdir.mkdir()
    for i in picks:
        arr = np.asarray(Image.open(paths[i]).convert("RGB")).astype(np.int16)
        Image.fromarray(np.clip(arr + 6, 0, 255).astype(np.uint8)).save(qdir / Path(paths[i]).name)
    index_dir, html_dir = tmp_path / "index", tmp_path / "page"
    argv = ["--index", str(index_dir), "--gallery", str(gallery_feats), "--query", str(qdir)]
    assert load_tool("search_gallery").main([*argv, "--topk", "5", "--html", str(html_dir)]) == 0
    records = json.loads((html_dir / "results.json").read_text())
    assert len(records) == len(picks)
    by_name = {Path(r["query"]).name: r for r in records}
    for i in picks:
        top = by_name[Path(paths[i]).name]["results"][0]
        assert top["path"] == paths[i] and top["similarity"] > 0.9
        assert labels[0][top["index"]] == labels[0][i]
    page = (html_dir / "index.html").read_text()
    assert page.count("<img ") == len(picks) and "first match: 1" in page
    assert len(list(html_dir.glob("*.jpg"))) == len(picks)


def test_saved_index_answers_queries_without_rebuilding(gallery_feats, tmp_path, capsys):
    tool = load_tool("search_gallery")
    index_dir = tmp_path / "hnsw"
    argv = ["--index", str(index_dir), "--gallery", str(gallery_feats), "--kind", "hnsw"]
    assert tool.main(argv) == 0
    assert tool.main(argv) == 2  # an existing index is not overwritten without --rebuild
    out = tmp_path / "hits.json"
    query = ["--query-features", str(gallery_feats), "--topk", "3", "--json", str(out)]
    assert tool.main(["--index", str(index_dir), *query]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "hnsw" and 0.0 <= summary["recall_vs_exact"] <= 1.0
    records = json.loads(out.read_text())
    assert all(r["results"][0]["path"] == r["query"] for r in records)  # each finds itself


class _CountingExtractor:
    """Wraps a FeatureExtractor; counts the images it embeds and fails on request."""

    def __init__(self, inner: FeatureExtractor, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.seen = inner, fail_after, 0

    def iter_batches(self, images, progress=None):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen += len(images)
        yield from self.inner.iter_batches(images, progress)


def test_interrupted_extraction_resumes_from_finished_shards(run_dir, market_dir, tmp_path):
    paths = sorted(str(p) for p in (market_dir / "bounding_box_test").glob("*.jpg"))
    ext = FeatureExtractor.from_run(run_dir, device="cpu")
    first = _CountingExtractor(ext, fail_after=10)
    with pytest.raises(KeyboardInterrupt):
        extract_to_folder(first, paths, tmp_path / "f", shard_size=5)
    assert not (tmp_path / "f" / "features.npy").exists() and first.seen == 10
    second = _CountingExtractor(ext)
    extract_to_folder(second, paths, tmp_path / "f", shard_size=5)
    assert second.seen == len(paths) - 10
    feats, got_paths, _, _ = load_features(tmp_path / "f")
    assert got_paths == paths
    np.testing.assert_allclose(feats, ext(paths), atol=1e-6)
    with pytest.raises(FileExistsError, match="another image list"):
        extract_to_folder(ext, paths[:-1], tmp_path / "f", shard_size=5)


def test_tools_fail_with_exit_code_2_and_a_clear_message(tmp_path, caplog):
    assert (
        load_tool("extract_features").main(
            ["--run", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "no image files" in caplog.text
    assert load_tool("search_gallery").main(["--index", str(tmp_path / "none")]) == 2
    assert "index.faiss" in caplog.text


def test_index_of_tool_output_matches_the_features(gallery_feats, tmp_path):
    feats, paths, _, _ = load_features(gallery_feats)
    index = GalleryIndex.build(feats, paths)
    _, idx = index.search(feats[:5], 1)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4]
