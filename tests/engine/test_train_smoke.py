"""A 2-epoch training run on tiny synthetic data, its checkpoint, an exact resume and an evaluation."""

from pathlib import Path

import pytest
import torch

from reid_ir.config import load_cfg
from reid_ir.engine.builder import build_engine, engine_run_kwargs
from reid_ir.engine.checkpoint import load_checkpoint
from reid_ir.evaluation.settings import EvalSettings

TINY = Path(__file__).resolve().parents[1] / "tiny.yaml"


def tiny_cfg(root: Path, save_dir: Path, epochs: int, *extra: str):
    return load_cfg(TINY, ["data.root", str(root), "data.save_dir", str(save_dir), "train.max_epoch", str(epochs), *extra])


def train(cfg, resume: str | None = None):
    torch.set_num_threads(1)
    engine = build_engine(cfg)
    if resume:
        engine.resume(resume)
    engine.run(**engine_run_kwargs(cfg))
    return engine


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("run") / "a"
    engine = train(tiny_cfg(root, out, 2))
    return root, out, engine


def test_training_writes_checkpoint_metrics_and_log(two_epoch_run):
    _, out, engine = two_epoch_run
    assert (out / "checkpoints" / "epoch_002.pth").is_file()
    assert (out / "checkpoints" / "last_checkpoint").read_text().strip() == "epoch_002.pth"
    assert (out / "metrics" / "synthetic_market_epoch_002.json").is_file()
    assert (out / "metrics" / "synthetic_market_epoch_002_cmc.png").is_file()
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2
    metrics = engine.last_metrics["synthetic_market"]
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["rank1"] <= 1.0


def test_checkpoint_holds_everything_to_resume(two_epoch_run):
    _, out, engine = two_epoch_run
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 2
    assert set(ckpt) >= {"model", "criterion", "optimizer", "scheduler", "hooks", "rng"}
    assert ckpt["scheduler"]["last_epoch"] == 2


def test_resume_restores_epoch_optimizer_and_rng(two_epoch_run, tmp_path):
    root, out, _ = two_epoch_run
    ckpt = load_checkpoint(out)
    engine = build_engine(tiny_cfg(root, tmp_path / "b", 3))
    assert engine.resume(str(out)) == 2
    opt_state = engine.optimizer.state_dict()["state"]
    for idx, saved in ckpt["optimizer"]["state"].items():
        for key, value in saved.items():
            assert torch.equal(torch.as_tensor(opt_state[idx][key]), torch.as_tensor(value)), (idx, key)
    assert torch.equal(torch.get_rng_state(), ckpt["rng"]["torch"])
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(tensor, ckpt["model"][name]), name


def test_resumed_run_matches_uninterrupted_run(two_epoch_run, tmp_path):
    root, out, _ = two_epoch_run
    straight = train(tiny_cfg(root, tmp_path / "straight", 3))
    resumed = train(tiny_cfg(root, tmp_path / "resumed", 3), resume=str(out))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(straight.criterion.classifier.weight, resumed.criterion.classifier.weight)


def test_evaluate_only_run_uses_every_test_key_of_the_config_under_its_own_name(two_epoch_run, tmp_path):
    root, out, _ = two_epoch_run
    cfg = tiny_cfg(root, tmp_path / "eval", 2, "model.load_weights", str(out / "checkpoints" / "epoch_002.pth"),
                   "test.evaluate", "True", "test.dist_metric", "cosine", "test.ranks", "[1, 2]",
                   "test.max_rank", "3", "test.rerank", "True", "test.rerank_k1", "4", "test.rerank_k2", "2")  # fmt: skip
    kwargs = engine_run_kwargs(cfg)
    assert kwargs["eval_settings"] == EvalSettings.from_cfg(cfg)
    for name in set(kwargs) - {"eval_settings"}:  # the rest: config keys, not renamed
        assert any(name in cfg[section] for section in ("data", "train", "test")), name
    metrics = build_engine(cfg).run(**kwargs)["synthetic_market"]
    assert (metrics["metric"], metrics["rerank"], len(metrics["cmc"])) == ("cosine", True, 3)
    assert "rank2" in metrics and not (tmp_path / "eval" / "checkpoints").exists()
