"""Markdown / CSV tables and atomic JSON."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from reid_ir.reports import tables
from reid_ir.reports.tables import format_csv, format_markdown, write_csv, write_json

METRICS = {"name": "run a", "mAP": 0.71234, "rank1": 0.9, "cmc": [0.9, 0.95],
           "num_valid_queries": 3368, "rerank": False}  # fmt: skip


def test_markdown_table_puts_known_metrics_first_and_skips_lists():
    text = format_markdown([METRICS, {"name": "run b", "mAP": 0.5, "rank1": 0.8}])
    lines = text.strip().splitlines()
    assert lines[0] == "| name | rank1 | mAP | num_valid_queries | rerank |"
    assert lines[1] == "| --- | ---: | ---: | ---: | --- |"
    assert lines[2] == "| run a | 0.9000 | 0.7123 | 3368 | False |"
    assert lines[3] == "| run b | 0.8000 | 0.5000 |  |  |"


def test_csv_keeps_full_precision_and_given_columns():
    text = format_csv(METRICS, columns=["name", "mAP"])
    assert text == "name,mAP\nrun a,0.71234\n"


def test_write_json_is_atomic_and_plain(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "metrics.json"
    write_json(path, {"cmc": np.array([0.5, 1.0], np.float32), "mAP": np.float64(0.25)})
    assert json.loads(path.read_text()) == {"cmc": [0.5, 1.0], "mAP": 0.25}

    # a failing write leaves the previous file untouched and no temp files behind
    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tables.os, "replace", boom)
    with pytest.raises(OSError):
        write_json(path, {"mAP": 0.5})
    assert json.loads(path.read_text())["mAP"] == 0.25
    assert os.listdir(path.parent) == ["metrics.json"]


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"mAP": float("nan")})


def test_write_csv_round_trips(tmp_path):
    path = write_csv(tmp_path / "t.csv", [METRICS])
    assert open(path).read().startswith("name,rank1,mAP")


def test_rows_must_be_mappings():
    with pytest.raises(ValueError, match="mapping"):
        format_markdown([1, 2])
