"""EvalSettings: the config's test.* names, one object from the config to the evaluator."""

from __future__ import annotations

import dataclasses
import inspect

from reid_ir.config import load_cfg
from reid_ir.evaluation import evaluate
from reid_ir.evaluation.settings import EvalSettings


def test_from_cfg_reads_each_field_from_the_test_key_of_the_same_name():
    cfg = load_cfg(None, ["test.dist_metric", "cosine", "test.rerank_lambda", "0.5",
                          "test.ranks", "[1, 3]", "loss.clmle.knc_k", "7"])  # fmt: skip
    s = EvalSettings.from_cfg(cfg)
    for f in dataclasses.fields(EvalSettings):
        expected = cfg.loss.clmle.knc_k if f.name == "knc_k" else cfg.test[f.name]
        assert getattr(s, f.name) == (tuple(expected) if f.name == "ranks" else expected), f.name
    assert (s.dist_metric, s.rerank_lambda, s.ranks, s.knc_k) == ("cosine", 0.5, (1, 3), 7)


def test_defaults_are_the_configs_and_the_evaluators():
    assert EvalSettings.from_cfg(load_cfg(None, [])) == EvalSettings()
    params = inspect.signature(evaluate).parameters
    for key, value in EvalSettings().evaluate_kwargs().items():
        assert params[key].default == value, key
