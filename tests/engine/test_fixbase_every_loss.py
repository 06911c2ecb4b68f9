"""train.fixbase_epoch freezes the backbone: one step must work with every registered loss.

The IR losses have no parameters, so with a frozen backbone nothing in the loss has a gradient;
the step then only updates the loss's own state (the centers) instead of raising
"element 0 of tensors does not require grad" (the paper preset: fixbase_epoch 5).
"""

from pathlib import Path

import pytest
import torch

from reid_ir.config import get_cfg, load_cfg
from reid_ir.engine.builder import build_engine
from reid_ir.losses import LOSSES, build_loss_from_cfg

TINY = Path(__file__).resolve().parents[1] / "tiny.yaml"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load_cfg(
        TINY,
        ["data.root", str(tmp_path_factory.mktemp("data")),
         "data.save_dir", str(tmp_path_factory.mktemp("run")),
         "train.fixbase_epoch", "1", "train.open_layers", "['classifier']"],
    )  # fmt: skip
    return build_engine(cfg)


@pytest.mark.parametrize("name", LOSSES.names())
def test_one_fixbase_step_trains_what_it_can_with_every_loss(engine, name):
    cfg = get_cfg()
    cfg.loss.name = name
    loss = build_loss_from_cfg(cfg, engine.num_classes, engine.model.feat_dim, engine.class_counts)
    engine.criterion = loss.to(engine.device)
    engine.optimizer = torch.optim.SGD([*engine.model.parameters(), *loss.parameters()], lr=0.1)
    engine.epoch = 0
    engine._set_trainable(1, ["classifier"])
    backbone = {k: v.clone() for k, v in engine.model.state_dict().items()}
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    summary = engine.forward_backward(next(iter(engine.train_loader)))
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert all(torch.equal(v, engine.model.state_dict()[k]) for k, v in backbone.items())
    changed = [k for k, v in loss.state_dict().items() if not torch.equal(v, state[k])]
    assert changed, f"{name}: neither the loss's parameters nor its state moved"
