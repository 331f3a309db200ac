"""Official pixelSplat checkpoints: loading, deterministic test weights, one-call prediction.

* ``load_checkpoint(path)``: an official Lightning checkpoint (``state_dict`` with keys
  ``encoder.*``; other keys ignored) or a checkpoint saved by this project
  (``save_checkpoint``: config + state dict, so any preset loads) -> encoder in eval mode.
* ``deterministic_weights(keys_and_shapes)``: the parity fixtures' weight recipe.
* ``predict(encoder, ...)``: deterministic (top-1 bucket) Gaussians as plain tensors.
"""

from __future__ import annotations

import math
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from .encoder import EncoderConfig, PixelSplatEncoder, config_from_dict, config_to_dict, encoder_config

PROJECT_FORMAT = "pixelsplat_ns.encoder/1"
OFFICIAL_PREFIX = "encoder."


class CheckpointError(ValueError):
    """The file is not a usable encoder checkpoint (message says why)."""


# --------------------------------------------------------------------------------------
# Deterministic weights (the parity fixtures' recipe)
# --------------------------------------------------------------------------------------


def deterministic_tensor(key: str, shape: Iterable[int]) -> Tensor:
    """The recipe's value for one state-dict entry, seeded by crc32 of its key."""
    shape = tuple(int(s) for s in shape)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if key.endswith("pos_embed") or key.endswith("cls_token"):
        return torch.randn(shape, generator=generator) * 0.02
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) * math.prod(shape[1:]) ** -0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def deterministic_weights(keys_and_shapes: Mapping[str, Iterable[int]]) -> dict[str, Tensor]:
    """Recipe weights for every key (without the ``encoder.`` prefix), in sorted order.

    For ``k`` with ``g = Generator().manual_seed(crc32(k))``: ``num_batches_tracked`` ->
    zeros; ``running_var`` -> 0.5 + rand; ``pos_embed`` / ``cls_token`` -> 0.02 randn;
    other tensors with >= 2 dims -> randn / sqrt(prod(shape[1:])); other ``*weight`` ->
    1 + 0.1 randn; everything else -> 0.1 randn.
    """
    return {key: deterministic_tensor(key, keys_and_shapes[key]) for key in sorted(keys_and_shapes)}


def fill_deterministic(encoder: PixelSplatEncoder) -> PixelSplatEncoder:
    """Overwrite every state-dict entry of ``encoder`` with the recipe (in place, no copy of the model)."""
    with torch.no_grad():
        for key, value in sorted(encoder.state_dict(keep_vars=True).items()):
            value.copy_(deterministic_tensor(key, value.shape))
    return encoder


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(encoder: PixelSplatEncoder, path: str | Path, **extra: Any) -> Path:
    """Save the encoder with its configuration (loadable by ``load_checkpoint``)."""
    path = Path(path)
    payload = {
        "format": PROJECT_FORMAT,
        "config": config_to_dict(encoder.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        **extra,
    }
    torch.save(payload, path)
    return path


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Lightning checkpoints may pickle hyper-parameters (omegaconf etc.); the file
            # is the user's own checkpoint, so fall back to a full load.
            return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, ModuleNotFoundError, AttributeError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error


def _official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    return {k[len(OFFICIAL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(OFFICIAL_PREFIX)}


def _official_config(state_dict: Mapping[str, Tensor]) -> EncoderConfig:
    """The official architecture, with the number of context views the checkpoint was trained for."""
    cfg = encoder_config("official")
    embeddings = state_dict.get("epipolar_transformer.view_embeddings.weight")
    if embeddings is not None:
        cfg.num_views = int(embeddings.shape[0])
    return cfg


def _load_state(encoder: PixelSplatEncoder, state_dict: Mapping[str, Any], path: Path) -> None:
    expected = encoder.state_dict()
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a tensor")
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    for key, target in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(target.shape):
            raise CheckpointError(
                f"{path}: shape mismatch for {key!r}: checkpoint has {tuple(state_dict[key].shape)}, "
                f"the encoder expects {tuple(target.shape)}"
            )
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} encoder weights missing, first {missing[0]!r}")
    if unexpected:
        raise CheckpointError(f"{path}: {len(unexpected)} unexpected encoder weights, first {unexpected[0]!r}")
    encoder.load_state_dict(state_dict, strict=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> PixelSplatEncoder:
    """Encoder in eval mode from an official pixelSplat checkpoint or one of this project's."""
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint dictionary")

    if payload.get("format") == PROJECT_FORMAT:
        if "config" not in payload or "state_dict" not in payload:
            raise CheckpointError(f"{path}: project checkpoint without 'config' or 'state_dict'")
        try:
            cfg = config_from_dict(payload["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: invalid encoder configuration: {error}") from error
        state_dict = payload["state_dict"]
    elif isinstance(payload.get("state_dict"), Mapping):
        state_dict = _official_state_dict(payload["state_dict"])
        if not state_dict:
            raise CheckpointError(f"{path}: the checkpoint's state_dict has no 'encoder.*' weights")
        cfg = _official_config(state_dict)
    elif payload and all(isinstance(k, str) for k in payload) and any(k.startswith(OFFICIAL_PREFIX) for k in payload):
        state_dict = _official_state_dict(payload)  # a bare official state dict
        cfg = _official_config(state_dict)
    else:
        raise CheckpointError(
            f"{path} is neither an official pixelSplat checkpoint (no 'state_dict' with 'encoder.*' keys) "
            "nor a pixelsplat_ns encoder checkpoint"
        )

    encoder = PixelSplatEncoder(cfg)
    _load_state(encoder, state_dict, path)
    return encoder.to(device).eval()


# --------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------


@torch.inference_mode()
def predict(
    encoder: PixelSplatEncoder,
    image: Tensor,
    extrinsics: Tensor,
    intrinsics: Tensor,
    near: Tensor,
    far: Tensor,
) -> dict[str, Tensor]:
    """Deterministic (top-1 depth bucket) Gaussians in the fixtures' conventions: inputs
    ``image`` [b, v, 3, h, w] in [0, 1], OpenCV camera-to-world ``extrinsics`` [b, v, 4, 4],
    normalised ``intrinsics`` [b, v, 3, 3], ``near`` / ``far`` [b, v]; outputs ``means``
    [b, n, 3], ``covariances`` [b, n, 3, 3], ``harmonics`` [b, n, 3, d_sh] (world frame,
    official SH basis), ``opacities`` [b, n], ordered (view, row, column)."""
    device = next(encoder.parameters()).device
    inputs = [t.to(device=device, dtype=torch.float32) for t in (image, extrinsics, intrinsics, near, far)]
    out = encoder(*inputs, deterministic=True, global_step=0)
    g = out.gaussians
    return {"means": g.means, "covariances": g.covariances, "harmonics": g.harmonics, "opacities": g.opacities}
