"""Export a trained embedding model: TorchScript, ONNX and torchreid-format weights.

TorchScript and ONNX files hold the model as retrieval uses it: preprocessed images
(B, 3, H, W) float32 -> features (B, D) float32, L2-normalised by default (the
extractor's output), with a dynamic batch size. Each export is read back and run
on sample images; the largest absolute difference from the eager model is
returned (the parity check).

torchreid-format weights are ``{'state_dict': ...}`` of the bare backbone, plain
tensors only, so torchreid's ``load_pretrained_weights`` / ``FeatureExtractor`` read
them under torch's ``weights_only`` loading. torchreid's architectures have no
reid_ir neck, so what torchreid computes from them is (see :func:`torchreid_feature`):

* ``model.neck none``: the run's own features;
* ``bnneck`` on ``osnet_*``: the neck's BN is written back as OSNet's ``fc`` BN,
  so torchreid computes ReLU(after_bn), OSNet's usual output;
* otherwise (``linear_bn``, ``bnneck`` on other backbones): the backbone's pooled
  feature, before the neck.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "torchreid")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class NormalizedEmbedder(nn.Module):
    """``model`` followed by L2 normalisation of its (B, D) output (eval mode only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: unit-norm features (B, D)."""
        return F.normalize(self.model(images), p=2, dim=1)


def _deployable(model: nn.Module, normalize: bool) -> nn.Module:
    model = model.eval().cpu()
    return NormalizedEmbedder(model).eval() if normalize else model


def _max_abs_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def export_torchscript(
    model: nn.Module, samples: torch.Tensor, path: str | os.PathLike, normalize: bool = True
) -> float:
    """Trace ``model`` to TorchScript, save it, load it back and compare.

    Args:
        model: the embedding model.
        samples: preprocessed sample images (B, 3, H, W); traced with these.
        path: output ``.pt`` file.
        normalize: end the exported model with L2 normalisation.

    Returns:
        max |eager - loaded TorchScript| over the samples' features.
    """
    net = _deployable(model, normalize)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", (DeprecationWarning, FutureWarning)
        )  # torch.jit is deprecated
        traced = torch.jit.trace(net, samples, check_trace=False)
        _atomic(path, lambda tmp: traced.save(tmp))
        loaded = torch.jit.load(os.fspath(path), map_location="cpu")
        return _max_abs_diff(net(samples), loaded(samples))


def export_onnx(
    model: nn.Module,
    samples: torch.Tensor,
    path: str | os.PathLike,
    normalize: bool = True,
    opset: int = 17,
) -> float | None:
    """Export ``model`` to ONNX (input ``images``, output ``features``, dynamic batch).

    Uses torch's TorchScript-based exporter (no ``onnxscript`` needed). The parity
    check runs the file with onnxruntime (CPU).

    Returns:
        max |eager - onnxruntime| over the samples' features, or None when
        onnxruntime is not installed (``pip install reid_ir[export]``).
    """
    net = _deployable(model, normalize)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            torch.onnx.export(
                net,
                (samples,),
                tmp,
                dynamo=False,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=int(opset),
            )

    _atomic(path, write)
    try:
        import onnxruntime as ort
    except ImportError:
        logger.warning(
            "onnxruntime is not installed: ONNX parity not checked (pip install onnxruntime)"
        )
        return None
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    out = session.run(["features"], {"images": samples.numpy()})[0]
    with torch.no_grad():
        return _max_abs_diff(net(samples), out)


def _torchreid_model(name: str) -> nn.Module:
    from reid_ir import compat

    with contextlib.redirect_stdout(io.StringIO()):
        return compat.models.build_model(name, num_classes=1, loss="softmax", pretrained=False)


def _fc_bn_prefix(fresh: nn.Module, own: dict) -> tuple[str, bool] | None:
    """The torchreid ``fc`` BatchNorm the neck's BN came from, and whether a ReLU follows it."""
    fc = getattr(fresh, "fc", None)
    if not isinstance(fc, nn.Sequential):
        return None
    layers = list(fc)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d) and f"fc.{i}.weight" not in own:
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            return f"fc.{i}", relu
    return None


def torchreid_state_dict(model: nn.Module, model_name: str) -> tuple[OrderedDict, str]:
    """The backbone's weights in torchreid's layout for ``model_name``.

    Args:
        model: a :class:`reid_ir.models.EmbeddingModel`.
        model_name: its torchreid name (``model.name``).

    Returns:
        (state dict of plain tensors, what torchreid computes from it: ``"run"``
        (the run's own features), ``"relu_after_bn"`` or ``"backbone"``).
    """
    state = OrderedDict(
        (k, v.detach().cpu().clone()) for k, v in model.backbone.state_dict().items()
    )
    neck = getattr(model, "neck_name", "none")
    if neck == "none":
        return state, "run"
    fresh = _torchreid_model(model_name)
    bn = getattr(model, "bn", None)
    found = _fc_bn_prefix(fresh, state)
    if neck == "bnneck" and isinstance(bn, nn.BatchNorm1d) and found is not None:
        prefix, relu = found
        for key, value in bn.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().cpu().clone()
        return state, "relu_after_bn" if relu else "after_bn"
    return state, "backbone"


@torch.inference_mode()
def torchreid_feature(model: nn.Module, images: torch.Tensor, side: str) -> torch.Tensor:
    """What torchreid's model computes from :func:`torchreid_state_dict`'s weights (eval mode).

    Args:
        model: the :class:`reid_ir.models.EmbeddingModel`.
        images: preprocessed (B, 3, H, W).
        side: the second value :func:`torchreid_state_dict` returned.

    Returns:
        (B, D') features, not normalised.
    """
    model = model.eval()
    if side == "run":
        return model(images)
    out = model.backbone(images)
    out = out[-1] if isinstance(out, (tuple, list)) else out
    if side in ("after_bn", "relu_after_bn"):
        out = model.bn(model.pre_neck(out))
    return F.relu(out) if side == "relu_after_bn" else out


def export_torchreid_weights(model: nn.Module, model_name: str, path: str | os.PathLike) -> str:
    """Write ``{'state_dict': ...}`` for torchreid; return what torchreid computes (see module doc)."""
    state, side = torchreid_state_dict(model, model_name)
    _atomic(path, lambda tmp: torch.save({"state_dict": state}, tmp))
    return side


def torchreid_parity(
    model: nn.Module,
    model_name: str,
    weights: str | os.PathLike,
    images: list[np.ndarray],
    transform: Any,
    image_size: tuple[int, int],
    norm_mean: list[float],
    norm_std: list[float],
    side: str,
) -> dict:
    """Load ``weights`` with torchreid's own ``FeatureExtractor`` and compare its features.

    Args:
        model: the eager model the weights came from.
        model_name: torchreid model name.
        weights: the torchreid-format file.
        images: sample images, (H, W, 3) uint8 RGB.
        transform: our test transform (PIL -> tensor) for the eager side.
        image_size, norm_mean, norm_std: the run's preprocessing, given to torchreid.
        side: what torchreid computes (:func:`torchreid_state_dict`).

    Returns:
        ``{"max_abs_diff": max |torchreid - expected|, "unused_tensors": [...]}``:
        the file's tensors torchreid's model has no place for (should be none).
    """
    from PIL import Image

    from reid_ir import compat

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = compat.utils.FeatureExtractor(
            model_name=model_name,
            model_path=os.fspath(weights),
            image_size=tuple(image_size),
            pixel_mean=list(norm_mean),
            pixel_std=list(norm_std),
            device="cpu",
            verbose=False,
        )
        theirs = extractor(list(images))
    own = extractor.model.state_dict()
    saved = torch.load(os.fspath(weights), map_location="cpu", weights_only=True)["state_dict"]
    unused = [k for k, v in saved.items() if k not in own or own[k].shape != v.shape]
    x = torch.stack([transform(Image.fromarray(im, "RGB")) for im in images])
    expected = torchreid_feature(model.cpu(), x, side)
    return {"max_abs_diff": _max_abs_diff(theirs, expected), "unused_tensors": unused}


def _atomic(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(os.fspath(tmp))
    os.replace(tmp, path)
