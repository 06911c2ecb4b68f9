"""Bad input through the command line: exit code 2 (3 when training diverges) and one error line
naming the path, key or value and what was expected; never a silent overwrite or a half-loaded state."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from reid_ir.data.synthetic import generate_synthetic_dataset
from reid_ir.engine.hooks.base import HookBase
from reid_ir.engine.run import main, parse_args

SYN = dict(num_train_ids=6, num_test_ids=4, images_per_camera=2, num_cameras=2, num_distractors=2,
           num_junk=2, image_size=(64, 32), seed=0)  # fmt: skip
TINY = [
    "model.name", "osnet_x0_25", "model.pretrained", "False", "use_gpu", "False",
    "data.height", "64", "data.width", "32", "data.workers", "0",
    "data.synthetic.num_train_ids", "6", "data.synthetic.num_test_ids", "4",
    "data.synthetic.images_per_camera", "2", "data.synthetic.num_cameras", "2",
    "data.synthetic.num_distractors", "2", "data.synthetic.num_junk", "2",
    "data.synthetic.image_size", "[64, 32]", "train.max_epoch", "1",
    "train.batch_size", "8", "train.deterministic", "True", "train.num_threads", "1",
    "test.batch_size", "16", "diagnostics.weight_center_angle", "False", "loss.name", "softmax",
]  # fmt: skip
SYNTHETIC = ["data.sources", "['synthetic_market']", "data.targets", "['synthetic_market']"]
MARKET = ["data.sources", "['market1501']", "data.targets", "['market1501']"]


def cli(caplog, *args: str, resume: bool = False) -> tuple[int, list[str]]:
    """``tools/train_net.py ARGS`` in-process -> (exit code, error lines logged)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(parse_args([*(["--resume"] if resume else []), *TINY, *args]))
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def one_error(errors: list[str], *fragments: str) -> str:
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture
def market_root(tmp_path):
    """A data root with a synthetic dataset in torchreid's real Market-1501 layout."""
    generate_synthetic_dataset(tmp_path / "data" / "market1501", layout="market", **SYN)
    return tmp_path / "data"


def _market_dir(root: Path) -> Path:
    return root / "market1501" / "Market-1501-v15.09.15"


def test_missing_dataset_root_says_where_it_looked_and_the_layout(caplog, tmp_path):
    code, errors = cli(
        caplog,
        *MARKET,
        "data.root",
        str(tmp_path / "nowhere"),
        "data.save_dir",
        str(tmp_path / "out"),
    )
    assert code == 2
    one_error(errors, "dataset 'market1501' not found", f"data.root = {tmp_path / 'nowhere'}",
              "bounding_box_train", "{bounding_box_train,query,bounding_box_test}/*.jpg")  # fmt: skip
    assert not (tmp_path / "nowhere").exists(), "nothing created, no download attempted"


def test_an_image_name_that_does_not_parse_is_named(caplog, market_root, tmp_path):
    bad = _market_dir(market_root) / "bounding_box_train" / "person_07.jpg"
    shutil.copy(next((bad.parent).glob("*.jpg")), bad)
    code, errors = cli(
        caplog, *MARKET, "data.root", str(market_root), "data.save_dir", str(tmp_path / "out")
    )
    assert code == 2
    one_error(errors, str(bad), "does not follow the market pattern", "0002_c1s1_000451_03.jpg")


@pytest.mark.parametrize("split, folder", [("query", "query"), ("gallery", "bounding_box_test")])
def test_an_empty_query_or_gallery_is_an_error_naming_the_folder(
    caplog, market_root, tmp_path, split, folder
):
    for p in (_market_dir(market_root) / folder).glob("*.jpg"):
        p.unlink()
    code, errors = cli(
        caplog, *MARKET, "data.root", str(market_root), "data.save_dir", str(tmp_path / "out")
    )
    assert code == 2
    one_error(
        errors,
        f"the {split} set of target dataset 'market1501' is empty",
        str(_market_dir(market_root) / folder),
    )


def test_a_split_manifest_of_another_dataset_is_refused(caplog, tmp_path):
    from reid_ir.data.datasets import make_split
    from reid_ir.data.imbalance import write_manifest

    root = tmp_path / "data"
    generate_synthetic_dataset(root / "dukemtmc-reid", layout="duke", **SYN)
    manifest = write_manifest(make_split("dukemtmcreid", root), tmp_path / "duke_split.json")
    code, errors = cli(caplog, "data.sources", "['market1501_imb']", "data.targets", "['market1501']",
                       "data.root", str(root), "data.imbalance.manifest", str(manifest),
                       "data.save_dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2
    one_error(
        errors,
        f"data.imbalance.manifest {manifest} is a split of 'dukemtmcreid'",
        "needs a split of 'market1501'",
    )


def test_bad_split_parameters_name_the_key_and_the_range(caplog, tmp_path):
    code, errors = cli(caplog, "data.sources", "['market1501_imb']", "data.targets", "['market1501']",
                       "data.imbalance.profile", "long_tail", "data.imbalance.rho", "0.5",
                       "data.root", str(tmp_path), "data.save_dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2
    one_error(errors, "data.imbalance", "rho=0.5: expected >= 1")


def test_an_unknown_config_key_is_named_with_a_suggestion(caplog, tmp_path):
    code, errors = cli(caplog, "train.lrr", "0.1", "data.save_dir", str(tmp_path / "out"))
    assert code == 2
    one_error(errors, "unknown config key 'train.lrr'", "train.lr")
    assert not (tmp_path / "out").exists()


def test_an_unknown_loss_name_lists_the_known_ones(caplog, tmp_path):
    code, errors = cli(caplog, *SYNTHETIC, "loss.name", "ir_am_softmaxx", "data.root", str(tmp_path / "data"),
                       "data.save_dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2
    one_error(
        errors, "loss.name", "'ir_am_softmaxx'", "Known loss names", "'clmle'", "'ir_am_softmax'"
    )
    assert not (tmp_path / "data").exists(), "fails before any data is read or generated"


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("loss.ir.rule", "median", "loss.ir.rule: unknown center update rule 'median'"),
        ("model.neck", "bn", "model.neck: unknown neck 'bn'"),
        ("loss.weighted.rule", "sqrt", "unknown class weight rule 'sqrt'"),
    ],
)
def test_a_bad_loss_or_neck_setting_is_a_config_error_naming_the_key(
    caplog, tmp_path, key, value, fragment
):
    name = {"loss.ir.rule": "ir_am_softmax", "loss.weighted.rule": "weighted_softmax"}.get(key, "softmax")
    code, errors = cli(caplog, *SYNTHETIC, "loss.name", name, key, value, "data.root", str(tmp_path / "data"),
                       "data.save_dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2, "a user error, not a traceback"
    one_error(errors, "ConfigError", fragment)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_with_a_previous_run_is_never_overwritten(caplog, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_001.pth").write_bytes(b"previous run")
    code, errors = cli(
        caplog, *SYNTHETIC, "data.root", str(tmp_path / "data"), "data.save_dir", str(out)
    )
    assert code == 2
    one_error(
        errors,
        f"output folder {out} already holds a run (checkpoints)",
        "--resume",
        "data.save_dir",
    )
    assert (out / "checkpoints" / "epoch_001.pth").read_bytes() == b"previous run"
    code, errors = cli(
        caplog,
        *SYNTHETIC,
        "data.root",
        str(tmp_path / "data"),
        "data.save_dir",
        str(out),
        resume=True,
    )
    assert code == 2
    one_error(errors, "cannot read checkpoint", "truncated or not a torch file")


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory):
    """synthetic_market with one truncated training JPEG and one query image that is not a JPEG at all."""
    root = tmp_path_factory.mktemp("corrupt")
    data_dir = (
        generate_synthetic_dataset(root / "synthetic_market", layout="market", **SYN)
        / "Market-1501-v15.09.15"
    )
    train_img = sorted((data_dir / "bounding_box_train").glob("*.jpg"))[5]
    train_img.write_bytes(train_img.read_bytes()[: train_img.stat().st_size * 2 // 5])
    query_img = sorted((data_dir / "query").glob("*.jpg"))[0]
    query_img.write_bytes(b"not an image")
    return root, train_img, query_img


def test_a_corrupt_jpeg_stops_the_run_naming_the_file(caplog, corrupt_root, tmp_path):
    root, train_img, _ = corrupt_root
    code, errors = cli(
        caplog, *SYNTHETIC, "data.root", str(root), "data.save_dir", str(tmp_path / "out")
    )
    assert code == 2
    one_error(errors, f"cannot decode image {train_img}", "data.skip_corrupt")


def test_skip_corrupt_checks_once_skips_and_counts(caplog, corrupt_root, tmp_path):
    root, train_img, query_img = corrupt_root
    out = tmp_path / "out"
    code, errors = cli(
        caplog,
        *SYNTHETIC,
        "data.root",
        str(root),
        "data.save_dir",
        str(out),
        "data.skip_corrupt",
        "True",
    )
    assert code == 0 and errors == []
    summary = json.loads((out / "final_metrics.json").read_text())
    assert summary["skipped_images"] == {"train": 1, "synthetic_market/query": 1}
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(train_img) in warnings and str(query_img) in warnings
    metrics = json.loads((out / "metrics" / "synthetic_market_epoch_001.json").read_text())
    assert metrics["num_query"] == len(list(query_img.parent.glob("*.jpg"))) - 1


class _PoisonWeights(HookBase):
    """Sets a backbone weight to NaN before iteration ``it`` of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int, it: int) -> None:
        self.at = (epoch, it)

    def before_step(self) -> None:
        t = self.trainer
        if (t.epoch + 1, t.batch_idx + 1) == self.at:
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("nan"))


def test_a_nan_loss_stops_naming_epoch_and_iteration_and_keeps_the_last_checkpoint(
    caplog, tmp_path, monkeypatch
):
    from reid_ir.engine import builder
    from reid_ir.engine.checkpoint import load_checkpoint

    build_hooks = builder.build_hooks
    monkeypatch.setattr(
        builder, "build_hooks", lambda *a, **k: [*build_hooks(*a, **k), _PoisonWeights(2, 2)]
    )
    out = tmp_path / "out"
    code, errors = cli(caplog, *SYNTHETIC, "data.root", str(tmp_path / "data"), "data.save_dir", str(out),
                       "train.max_epoch", "3")  # fmt: skip
    assert code == 3
    one_error(
        errors, "NonFiniteLossError", "loss is nan at epoch 2, iteration 2", "last good checkpoint"
    )
    assert (out / "checkpoints" / "last_checkpoint").read_text().strip() == "epoch_001.pth"
    state = load_checkpoint(out)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )


def test_nan_features_are_refused_by_the_evaluator_and_named_by_the_engine(tmp_path):
    from reid_ir.config import load_cfg
    from reid_ir.engine.builder import build_engine
    from reid_ir.errors import NonFiniteFeaturesError
    from reid_ir.evaluation import evaluate

    qf, gf = torch.randn(3, 8), torch.randn(5, 8)
    qf[1, 2] = float("nan")
    with pytest.raises(ValueError, match="qf .*NaN"):
        evaluate(qf, gf, [1, 2, 3], [1, 2, 3, 4, 5], [0, 0, 0], [1, 1, 1, 1, 1])

    engine = build_engine(
        load_cfg(
            None,
            [*TINY, *SYNTHETIC, "data.root", str(tmp_path), "data.save_dir", str(tmp_path / "o")],
        )
    )
    with torch.no_grad():
        for p in engine.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(
        NonFiniteFeaturesError,
        match=r"synthetic_market query: .*NaN/inf embeddings for \d+ of \d+ images \(e\.g\. \['/",
    ):
        engine.test(save_dir=str(tmp_path / "o"))
