"""The neck between the backbone and every loss: signed features, the retrieval side, errors."""

import pytest
import torch
from torch import nn

from reid_ir.config import get_cfg
from reid_ir.models import backbone_kwargs, build_backbone

IMAGES = torch.randn(6, 3, 64, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["osnet_x0_25", "resnet18"])
def test_bnneck_features_are_signed_and_the_bias_is_frozen_at_zero(name):
    torch.manual_seed(0)
    model = build_backbone(name, neck="bnneck")
    out = model.train()(IMAGES)
    assert out.shape == (6, model.feat_dim) and (out < 0).any() and (out > 0).any()
    assert isinstance(model.bn, nn.BatchNorm1d) and not model.bn.bias.requires_grad
    assert torch.equal(model.bn.bias, torch.zeros_like(model.bn.bias))
    relus = [m for m in model.backbone.modules() if isinstance(m, nn.ReLU)]
    fc = getattr(model.backbone, "fc", None)
    assert fc is None or not any(isinstance(m, (nn.ReLU, nn.BatchNorm1d)) for m in fc.modules())
    assert relus, "the backbone's inner ReLUs stay"


def test_osnet_neck_none_keeps_torchreid_features_which_are_non_negative():
    torch.manual_seed(0)
    model = build_backbone("osnet_x0_25", neck="none")
    assert (model.train()(IMAGES) >= 0).all()


def test_eval_mode_returns_the_side_test_feature_names():
    torch.manual_seed(0)
    after = build_backbone("osnet_x0_25", neck="bnneck", test_feature="after_bn")
    after.train()(IMAGES)  # running statistics away from their (0, 1) start
    after.eval()
    before = build_backbone("osnet_x0_25", neck="bnneck", test_feature="before_bn").eval()
    before.load_state_dict(after.state_dict())
    with torch.no_grad():
        pre = before(IMAGES)
        torch.testing.assert_close(after(IMAGES), after.bn(pre))
        assert not torch.allclose(pre, after(IMAGES))


def test_linear_bn_projects_to_the_embedding_size():
    model = build_backbone("osnet_x0_25", neck="linear_bn", embedding_dim=64)
    assert model.feat_dim == 64 and model.train()(IMAGES).shape == (6, 64)


def test_neck_settings_flow_from_the_config_and_bad_values_name_the_key():
    cfg = get_cfg()
    cfg.model.name, cfg.model.pretrained, cfg.test.feature = "osnet_x0_25", False, "before_bn"
    model = build_backbone(**backbone_kwargs(cfg))
    assert (model.neck_name, model.test_feature) == ("bnneck", "before_bn")
    with pytest.raises(ValueError, match="model.neck"):
        build_backbone("osnet_x0_25", neck="bn")
    with pytest.raises(ValueError, match="test.feature"):
        build_backbone("osnet_x0_25", test_feature="middle")
    with pytest.raises(ValueError, match="embedding_dim"):
        build_backbone("osnet_x0_25", neck="linear_bn")
