"""Where the wide-baseline network's weights come from: a checkpoint file (official or this
project's), the bundled small model, or (said plainly) nowhere: seeded random weights."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.io import atomic_path, output_errors

if TYPE_CHECKING:
    from pixelsplat_ns.widebaseline.network import WideBaselineNetwork

# The `small` architecture trained on CPU by configs/train_bundled_widebaseline.sh (see README).
BUNDLED_NETWORK = Path(str(files("pixelsplat_ns") / "assets" / "weights" / "widebaseline-small.ckpt"))
PROJECT_FORMAT = "pixelsplat_ns.widebaseline/1"
_warned: set[str] = set()


def architecture_config(name: Literal["small", "official"]):
    """The ``WideBaselineConfig`` preset of that name."""
    from pixelsplat_ns.widebaseline.config import WideBaselineConfig

    presets = {"small": WideBaselineConfig.small, "official": WideBaselineConfig.official}
    if name not in presets:
        raise PixelSplatInputError(f"unknown wide-baseline architecture '{name}': choose small or official")
    return presets[name]()


def save_network(network: WideBaselineNetwork, path: str | Path, **extra: Any) -> Path:
    """Save in this project's format, ``{"model": state_dict, "format", "config", ...}`` (the
    official ``model`` key, so official tools read the weights too); atomically."""
    path = Path(path)
    payload = {
        "format": PROJECT_FORMAT,
        "config": network.cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        **extra,
    }
    with output_errors(path), atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_network_file(path: str | Path, device: str = "cpu") -> WideBaselineNetwork:
    """A checkpoint written by ``save_network`` (its own architecture) or an official one."""
    from pixelsplat_ns.widebaseline.config import WideBaselineConfig
    from pixelsplat_ns.widebaseline.network import WideBaselineNetwork
    from pixelsplat_ns.widebaseline.official import CheckpointError, load_checkpoint

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"wide-baseline checkpoint {path} does not exist: place an official checkpoint of Du et al. "
            "(model_current.pth) or one saved by wide-baseline-pretrain there, or omit --pipeline.model.checkpoint"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        payload = None
    if not (isinstance(payload, dict) and payload.get("format") == PROJECT_FORMAT):
        return load_checkpoint(path, device=device)
    try:
        network = WideBaselineNetwork(WideBaselineConfig.from_dict(payload["config"]))
        network.load_state_dict(payload["model"])
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is a wide-baseline checkpoint whose weights do not fit its architecture ({first})"
        ) from None
    return network.to(device).eval()


def load_network(
    architecture: Literal["small", "official"] = "small",
    checkpoint: Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    untrained: bool = False,
) -> WideBaselineNetwork:
    """The network in eval mode: from ``checkpoint``; without one, the bundled model for the
    ``small`` architecture; otherwise (or with ``untrained``) seeded random weights, announced
    once per process since its renders will not resemble the scene."""
    from pixelsplat_ns.widebaseline.network import WideBaselineNetwork

    if checkpoint is not None:
        return load_network_file(checkpoint, device)
    if architecture == "small" and not untrained and BUNDLED_NETWORK.is_file():
        return load_network_file(BUNDLED_NETWORK, device)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        network = WideBaselineNetwork(architecture_config(architecture)).to(device).eval()
    if untrained:
        CONSOLE.print(f"wide-baseline: the '{architecture}' network runs with untrained (random) weights, as requested")
    elif architecture not in _warned:
        _warned.add(architecture)
        CONSOLE.print(
            f"[bold yellow]wide-baseline: the '{architecture}' network runs with UNTRAINED (random) weights, so its "
            "renders will not look like the scene. Pass --pipeline.model.checkpoint PATH with trained weights."
        )
    return network
