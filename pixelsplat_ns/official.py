"""Official pixelSplat checkpoints: loading, saving, one-call prediction.

* ``load_checkpoint(path)``: an official Lightning checkpoint (``state_dict`` with keys
  ``encoder.*``; other keys ignored) or a checkpoint saved by this project
  (``save_checkpoint``: config + state dict, so any preset loads) -> encoder in eval mode.
* ``predict(encoder, ...)``: deterministic (top-1 bucket) Gaussians as plain tensors.

The parity fixtures' deterministic weights (no checkpoint needed) are in ``fixture_weights``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .encoder import EncoderConfig, PixelSplatEncoder, config_from_dict, config_to_dict, encoder_config
from .encoder.config import PRESETS
from .errors import PixelSplatInputError
from .io import atomic_path, output_errors

# Written into every checkpoint this project saves; bump the version when the layout changes
# (a file of a newer version is refused with the version found, never misread).
PROJECT_FORMAT_NAME = "pixelsplat_ns.encoder"
PROJECT_FORMAT_VERSION = 1
PROJECT_FORMAT = f"{PROJECT_FORMAT_NAME}/{PROJECT_FORMAT_VERSION}"
OFFICIAL_PREFIX = "encoder."


class CheckpointError(PixelSplatInputError):
    """The file is not a usable encoder checkpoint (message says why)."""


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(encoder: PixelSplatEncoder, path: str | Path, **extra: Any) -> Path:
    """Save the encoder with its configuration and format version (loadable by ``load_checkpoint``);
    atomically: a failed write raises ``PixelSplatOutputError`` and leaves the previous file whole."""
    path = Path(path)
    payload = {
        "format": PROJECT_FORMAT,
        "config": config_to_dict(encoder.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        **extra,
    }
    with output_errors(path), atomic_path(path) as temporary:  # creates the folder; never a half-written file
        torch.save(payload, temporary)
    return path


class _Unavailable:
    """Stands in for objects of classes that cannot be imported here (e.g. a training
    framework's callback state inside a Lightning checkpoint); the encoder never uses them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Unavailable,), {"__module__": module})


class _LenientPickle:
    """A ``pickle_module`` for ``torch.load`` that tolerates unimportable classes."""

    Unpickler = _LenientUnpickler
    __name__ = "pixelsplat_ns_lenient_pickle"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _LenientUnpickler(file, **kwargs).load()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
        # A Lightning checkpoint may pickle training state (callbacks, hyper-parameters)
        # beyond tensors. The file is the user's own checkpoint: load it fully, with
        # placeholders for classes that are not importable here.
    except Exception as error:  # torch raises many types for non-checkpoint files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LenientPickle)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error


def _strip_official_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k[len(OFFICIAL_PREFIX) :]: v
        for k, v in state_dict.items()
        if isinstance(k, str) and k.startswith(OFFICIAL_PREFIX)
    }


def _expected_shapes(cfg: EncoderConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in PixelSplatEncoder(cfg).state_dict().items()}


def _infer_config(state_dict: Mapping[str, Tensor], path: Path) -> EncoderConfig:
    """The preset (official or tiny) whose parameter names the weights carry, with the
    number of context views of the checkpoint (3-view checkpoints carry view embeddings)."""
    embeddings = state_dict.get("epipolar_transformer.view_embeddings.weight")
    candidates = []
    for preset in PRESETS:
        cfg = encoder_config(preset)
        if isinstance(embeddings, Tensor) and embeddings.ndim == 2:
            cfg.num_views = int(embeddings.shape[0])
        expected = _expected_shapes(cfg)
        if set(expected) == set(state_dict):
            return cfg
        candidates.append((len(set(expected) & set(state_dict)), preset, cfg, expected))
    _, preset, _, expected = max(candidates, key=lambda c: c[0])
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problem = (
        f"{len(missing)} weights missing, first {missing[0]!r}" if missing
        else f"{len(unexpected)} unexpected weights, first {unexpected[0]!r}"
    )  # fmt: skip
    raise CheckpointError(f"{path}: the encoder weights match no known architecture (closest: {preset!r}: {problem})")


def _check_state(cfg: EncoderConfig, state_dict: Mapping[str, Any], path: Path) -> None:
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    expected = _expected_shapes(cfg)
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} encoder weights missing, first {missing[0]!r}")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: {len(unexpected)} unexpected encoder weights, first {unexpected[0]!r}")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise CheckpointError(
                f"{path}: shape mismatch for {key!r}: the checkpoint has {tuple(state_dict[key].shape)}, "
                f"the encoder expects {shape}"
            )


def _check_project_format(found: Any, path: Path) -> None:
    """Refuse a project checkpoint of another format version (e.g. one written by a newer
    pixelsplat_ns), naming the file, the version found and the version read here."""
    if not isinstance(found, str) or not found.startswith(PROJECT_FORMAT_NAME + "/") or found == PROJECT_FORMAT:
        return
    version = found[len(PROJECT_FORMAT_NAME) + 1 :]
    if version.isdigit() and int(version) > PROJECT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer pixelsplat_ns (encoder checkpoint format {int(version)}); this version "
            f"reads format {PROJECT_FORMAT_VERSION}: upgrade pixelsplat_ns to load it"
        )
    raise CheckpointError(
        f"{path} has an unknown pixelsplat_ns checkpoint format {found!r}; this version reads {PROJECT_FORMAT!r}"
    )


def read_encoder_weights(path: str | Path) -> tuple[EncoderConfig, dict[str, Tensor]]:
    """(configuration, state dict without prefix) from an official or project checkpoint."""
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint dictionary")

    _check_project_format(payload.get("format"), path)
    if payload.get("format") == PROJECT_FORMAT:
        if not isinstance(payload.get("config"), Mapping) or not isinstance(payload.get("state_dict"), Mapping):
            raise CheckpointError(f"{path}: project checkpoint without a 'config' and 'state_dict'")
        try:
            cfg = config_from_dict(dict(payload["config"]))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: invalid encoder configuration: {error}") from error
        state_dict = dict(payload["state_dict"])
    else:
        if isinstance(payload.get("state_dict"), Mapping):
            state_dict = _strip_official_prefix(payload["state_dict"])  # Lightning checkpoint
        else:
            state_dict = _strip_official_prefix(payload)  # a bare official state dict
        if not state_dict:
            raise CheckpointError(
                f"{path} is neither an official pixelSplat checkpoint (a 'state_dict' with 'encoder.*' weights) "
                "nor a pixelsplat_ns encoder checkpoint"
            )
        cfg = _infer_config(state_dict, path)
    _check_state(cfg, state_dict, path)
    return cfg, state_dict


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> PixelSplatEncoder:
    """Encoder in eval mode from an official pixelSplat (Lightning) checkpoint — keys
    ``encoder.*`` of its ``state_dict``, other keys ignored, 2- or 3-view — or from a
    checkpoint saved by ``save_checkpoint`` (any preset). Raises ``CheckpointError`` (a
    ``ValueError``) naming the problem for unreadable files and mismatched weights."""
    cfg, state_dict = read_encoder_weights(path)
    encoder = PixelSplatEncoder(cfg)
    encoder.load_state_dict(state_dict, strict=True)
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
