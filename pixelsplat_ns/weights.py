"""Where encoder weights come from: a checkpoint file, the bundled encoder, or (said
plainly) nowhere: seeded random weights."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from nerfstudio.utils.rich_utils import CONSOLE

if TYPE_CHECKING:
    from pixelsplat_ns.encoder import PixelSplatEncoder

_untrained_warned: set[str] = set()

# The `tiny` encoder trained on CPU by configs/train_bundled_encoder.sh (see README).
BUNDLED_ENCODER = Path(str(files("pixelsplat_ns") / "assets" / "weights" / "tiny.ckpt"))
# It saw 64x64 crops of frames resized to a 64-pixel short side (about 114 px long side
# for 16:9): features are scale-dependent, so it is fed context images of that scale.
BUNDLED_LONG_SIDE = 114
DEFAULT_LONG_SIDE = 512


def uses_bundled_encoder(preset: str, checkpoint: Path | None, untrained: bool = False) -> bool:
    return checkpoint is None and not untrained and preset == "tiny" and BUNDLED_ENCODER.is_file()


def default_long_side(preset: str, checkpoint: Path | None, untrained: bool = False) -> int:
    """Long side (pixels) of the context images when the user does not choose one."""
    return BUNDLED_LONG_SIDE if uses_bundled_encoder(preset, checkpoint, untrained) else DEFAULT_LONG_SIDE


def input_long_side(
    encoder: "PixelSplatEncoder",
    image_shape: tuple[int, int],
    preset: str,
    checkpoint: Path | None,
    untrained: bool = False,
) -> int:
    """Long side (pixels) to which context images of ``image_shape`` (h, w) are downscaled for
    ``encoder``: the scale its training examples had (frames resized to cover the example shape,
    then cropped) when its checkpoint records it, else ``default_long_side``."""
    trained = encoder.cfg.train_image_shape
    if trained is None:
        return default_long_side(preset, checkpoint, untrained)
    h, w = image_shape
    return round(max(h, w) * max(trained[0] / h, trained[1] / w))


def load_encoder(
    preset: str,
    checkpoint: Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    untrained: bool = False,
    for_inference: bool = False,
) -> "PixelSplatEncoder":
    """The encoder in eval mode: from ``checkpoint`` (official pixelSplat or this
    project's, detected from the file); without one, the bundled encoder for the ``tiny``
    preset; otherwise (or with ``untrained``) the ``preset`` architecture with seeded
    random weights — announced once per process, since its Gaussians will not resemble
    the scene.

    ``for_inference``: prepared for fast inference once its weights are loaded
    (``encoder.inference.prepare_for_inference``; it then runs without autograd only);
    otherwise the plain network, for training and gradients."""
    encoder = _load_network(preset, checkpoint, seed, device, untrained)
    if for_inference:
        from pixelsplat_ns.encoder.inference import prepare_for_inference

        return prepare_for_inference(encoder)
    return encoder


def _load_network(preset: str, checkpoint: Path | None, seed: int, device: str, untrained: bool) -> "PixelSplatEncoder":
    """The plain network with ``load_encoder``'s weights."""
    from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config

    if checkpoint is not None:
        from pixelsplat_ns.official import load_checkpoint

        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"encoder checkpoint {checkpoint} does not exist: place an official pixelSplat checkpoint "
                "(re10k.ckpt / acid.ckpt) or one saved by pixelsplat-ns there, or omit --pipeline.model.encoder-checkpoint"
            )
        return load_checkpoint(checkpoint, device=device)
    if uses_bundled_encoder(preset, checkpoint, untrained):
        from pixelsplat_ns.official import load_checkpoint

        return load_checkpoint(BUNDLED_ENCODER, device=device)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        encoder = PixelSplatEncoder(encoder_config(preset)).to(device).eval()
    if untrained:
        CONSOLE.print(f"pixelsplat: the '{preset}' encoder runs with untrained (random) weights, as requested")
    elif preset not in _untrained_warned:
        _untrained_warned.add(preset)
        CONSOLE.print(
            f"[bold yellow]pixelsplat: the '{preset}' encoder runs with UNTRAINED (random) weights, so its Gaussians "
            "will not look like the scene. Pass --pipeline.model.encoder-checkpoint PATH with trained weights."
        )
    return encoder
