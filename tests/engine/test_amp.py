"""train.amp and train.channels_last: the backbone under autocast, the loss in float32.

On this CPU autocast runs in bfloat16 (as on bf16-capable GPUs); the float16 +
GradScaler path of older GPUs is exercised on the CPU by forcing float16.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reid_ir.engine import engine as engine_mod
from reid_ir.engine.engine import ReidEngine
from reid_ir.engine.hooks.grad_scaler import GradScalerHook
from reid_ir.losses import build_loss

NUM_CLASSES, FEAT_DIM, BATCH = 6, 16, 12
HEADS = [
    "softmax",
    "weighted_softmax",
    "am_softmax",
    "arcface",
    "ir_am_softmax",
    "ir_arcface",
    "ir_a_softmax",
    "unpg_am_softmax",
    "unpg_ir_am_softmax",
]


class TinyImages(Dataset):
    """``BATCH * 2`` random 3x32x16 images of NUM_CLASSES identities, as torchreid's dicts."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(BATCH * 2, 3, 32, 16, generator=g)
        self.pids = torch.arange(BATCH * 2) % NUM_CLASSES
        self.train = [("img.jpg", int(p), 0) for p in self.pids]

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, i: int) -> dict:
        return {"img": self.images[i], "pid": self.pids[i], "camid": 0}


def tiny_backbone() -> nn.Module:
    """Conv-BN-ReLU x2 -> pooled (B, FEAT_DIM) embeddings (signed: a BN at the end)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, FEAT_DIM, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(FEAT_DIM),
    )


def make_engine(loss: str, amp: bool = False, channels_last: bool = False) -> ReidEngine:
    """An engine over TinyImages; the same weights for every call (seeded)."""
    torch.manual_seed(0)
    dataset = TinyImages()
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, drop_last=True)
    dm = SimpleNamespace(train_loader=loader, test_loader={}, num_train_pids=NUM_CLASSES)
    model = tiny_backbone()
    counts = torch.bincount(dataset.pids, minlength=NUM_CLASSES)
    criterion = build_loss(loss, NUM_CLASSES, FEAT_DIM, counts)
    params = [*model.parameters(), *criterion.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    return ReidEngine(
        dm, model, criterion, optimizer, use_gpu=False, amp=amp, channels_last=channels_last
    )


def first_batch(engine: ReidEngine) -> dict:
    return next(iter(engine.train_loader))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_amp_runs_the_backbone_in_bf16_and_the_loss_in_float32():
    engine = make_engine("ir_am_softmax", amp=True)
    seen = {}
    engine.model[0].register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o.dtype))
    engine.criterion.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("loss_input", args[0].dtype)
    )
    engine.forward_backward(first_batch(engine))
    out = engine.step_outputs["output"]
    assert seen == {"conv": torch.bfloat16, "loss_input": torch.float32}
    assert out.loss.dtype == torch.float32 and out.logits.dtype == torch.float32
    assert engine.criterion.class_weight().dtype == torch.float32
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in engine.model.parameters())


@pytest.mark.parametrize("loss", HEADS)
def test_amp_loss_equals_the_float32_loss_to_bf16_tolerance(loss):
    plain, mixed = make_engine(loss), make_engine(loss, amp=True)
    before = copy.deepcopy(mixed.criterion)
    s_plain = plain.forward_backward(first_batch(plain))
    s_mixed = mixed.forward_backward(first_batch(mixed))
    # the loss of the AMP step is exactly the float32 criterion on the (cast) features
    with torch.no_grad():
        exact = before(mixed.step_outputs["features"], mixed.step_outputs["targets"]).loss
    assert s_mixed["loss"] == pytest.approx(exact.item(), rel=1e-6, abs=1e-6)
    # and within bf16 rounding of the backbone of the all-float32 step
    assert s_mixed["loss"] == pytest.approx(s_plain["loss"], rel=2e-2, abs=2e-2)
    feats_plain, feats_mixed = plain.step_outputs["features"], mixed.step_outputs["features"]
    assert torch.allclose(feats_mixed, feats_plain, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("loss", ["ir_am_softmax", "ir_arcface", "unpg_ir_am_softmax"])
def test_amp_ir_centers_are_updated_in_float32_from_float32_features(loss):
    plain, mixed = make_engine(loss), make_engine(loss, amp=True)
    before = copy.deepcopy(mixed.criterion)
    plain.forward_backward(first_batch(plain))
    mixed.forward_backward(first_batch(mixed))
    with torch.no_grad():  # a float32 copy of the loss fed the AMP step's features
        before(mixed.step_outputs["features"], mixed.step_outputs["targets"])
    centers = mixed.criterion.class_weight()
    assert centers.dtype == torch.float32
    assert torch.equal(centers, before.class_weight())
    assert torch.allclose(centers, plain.criterion.class_weight(), rtol=5e-2, atol=5e-2)


def test_channels_last_keeps_the_step_and_stores_weights_nhwc():
    plain, nhwc = make_engine("am_softmax"), make_engine("am_softmax", channels_last=True)
    conv = nhwc.model[3].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    s_plain = plain.forward_backward(first_batch(plain))
    s_nhwc = nhwc.forward_backward(first_batch(nhwc))
    assert s_nhwc["loss"] == pytest.approx(s_plain["loss"], rel=1e-5)
    for a, b in zip(plain.model.parameters(), nhwc.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # float reassociation only


def test_float32_engine_has_no_scaler_and_no_scaler_hook():
    engine = make_engine("softmax")
    assert not engine.scaler.is_enabled()
    assert engine.find_hook(GradScalerHook) is None
    assert "GradScalerHook" not in engine.checkpoint_state()["hooks"]


def test_fp16_scaler_state_is_checkpointed_and_restored(monkeypatch):
    """The float16 path (GPUs without bf16), forced on the CPU: scaled loss, scaler in checkpoints."""
    monkeypatch.setattr(engine_mod, "amp_dtype", lambda device: torch.float16)
    engine = make_engine("am_softmax", amp=True)
    assert engine.scaler.is_enabled() and engine.find_hook(GradScalerHook) is not None
    seen = {}
    engine.model[0].register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o.dtype))
    data = first_batch(engine)
    scales = []
    for _ in range(20):  # 2**16 overflows fp16 gradients: skipped steps halve the scale
        before = [p.detach().clone() for p in engine.model.parameters()]
        summary = engine.forward_backward(data)
        assert torch.isfinite(torch.tensor(summary["loss"]))
        scales.append(engine.scaler.get_scale())
        after = engine.model.parameters()
        if any(not torch.equal(a, p) for a, p in zip(before, after, strict=True)):
            break
    else:
        pytest.fail(f"every scaled step was skipped (scales {scales})")
    assert seen["conv"] == torch.float16
    assert scales[0] <= 2.0**16 and scales == sorted(scales, reverse=True)
    engine.scaler.update(new_scale=1234.0)
    state = engine.checkpoint_state()
    assert state["hooks"]["GradScalerHook"]["scale"] == 1234.0
    fresh = make_engine("am_softmax", amp=True)
    assert fresh.scaler.get_scale() != 1234.0
    fresh.find_hook(GradScalerHook).load_state_dict(state["hooks"]["GradScalerHook"])
    assert fresh.scaler.get_scale() == 1234.0


def test_amp_and_channels_last_train_and_evaluate_from_the_config(tmp_path):
    from reid_ir.config import load_cfg
    from reid_ir.engine.builder import build_engine, engine_run_kwargs

    tiny = Path(__file__).resolve().parents[1] / "tiny.yaml"
    cfg = load_cfg(
        tiny,
        ["data.root", str(tmp_path / "data"), "data.save_dir", str(tmp_path / "run"),
         "train.max_epoch", "1", "loss.name", "ir_am_softmax",
         "train.amp", "True", "train.channels_last", "True"],
    )  # fmt: skip
    engine = build_engine(cfg)
    assert engine.amp_dtype == torch.bfloat16 and engine.channels_last
    metrics = engine.run(**engine_run_kwargs(cfg))["synthetic_market"]
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["rank1"] <= 1.0
