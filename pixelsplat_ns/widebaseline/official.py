"""Official checkpoints of Du et al.'s cross-attention renderer, and one call that renders
rays the way the official code does (its inputs and outputs, its conventions).

* ``load_checkpoint(path)``: the official file (``{"model": state_dict, "optimizer": ...}``,
  keys without prefix, as its training script saves it) or a bare state dict ->
  ``WideBaselineNetwork`` in eval mode. ``save_checkpoint`` writes the official format.
* ``render_rays(model, inputs)``: a parity fixture's ``inputs`` (the official ``input``
  dict, flattened) -> the official forward's outputs in its layouts, plus intermediates.

The parity fixtures' deterministic weights are in ``pixelsplat_ns.fixture_weights``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from ..geometry import transform
from ..io import atomic_path, output_errors
from ..official import CheckpointError
from .config import WideBaselineConfig
from .geometry import other_view, pixel_rays
from .network import WideBaselineNetwork
from .renderer import WideBaselineRays

__all__ = ["CheckpointError", "load_checkpoint", "read_state_dict", "render_rays", "save_checkpoint"]

WHERE_TO_GET = (
    "the official RealEstate10K model (logs/realestate/checkpoints/model_current.pth of "
    "github.com/yilundu/cross_attention_renderer's released archive)"
)

# Official outputs and intermediates whose ray axis is not 1 (for concatenating chunks).
_RAY_AXIS = {"rgb": 2, "local_coords": 2}


def _expected_shapes(cfg: WideBaselineConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in WideBaselineNetwork(cfg).state_dict().items()}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The official state dict from ``path``, checked against the official architecture.
    Raises ``CheckpointError`` (a ``PixelSplatInputError``) with one line naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"wide-baseline checkpoint {path} does not exist: place {WHERE_TO_GET} there")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason}): expected {WHERE_TO_GET}"
        ) from error
    if isinstance(payload, Mapping) and isinstance(payload.get("model"), Mapping):
        state_dict = dict(payload["model"])
    elif isinstance(payload, Mapping) and payload and all(isinstance(v, Tensor) for v in payload.values()):
        state_dict = dict(payload)  # a bare state dict
    else:
        found = (
            type(payload).__name__
            if not isinstance(payload, Mapping)
            else f"a dict with keys {sorted(map(str, payload))[:5]}"
        )
        raise CheckpointError(
            f"{path} holds {found}, not a wide-baseline checkpoint ({{'model': state_dict}} or a state dict): expected {WHERE_TO_GET}"
        )
    _check_state(state_dict, path)
    return state_dict


def _check_state(state_dict: Mapping[str, Any], path: Path) -> None:
    expected = _expected_shapes(WideBaselineConfig.official())
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        matched = len(expected) - len(missing)
        example = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(
            f"{path} is not an official wide-baseline (Du et al.) checkpoint: {matched} of its {len(state_dict)} "
            f"weights match the {len(expected)} expected ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"e.g. {example}): place {WHERE_TO_GET} there"
        )
    for key, shape in expected.items():
        value = state_dict[key]
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f"{path}: {key!r} is {found}, the official two-view model expects {shape} "
                f"(a checkpoint of another configuration?): place {WHERE_TO_GET} there"
            )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> WideBaselineNetwork:
    """``WideBaselineNetwork`` (official configuration) in eval mode from an official
    checkpoint (``{"model": state_dict, ...}``, other entries ignored) or a bare state dict."""
    state_dict = read_state_dict(path)
    model = WideBaselineNetwork(WideBaselineConfig.official())
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def save_checkpoint(model: WideBaselineNetwork, path: str | Path) -> Path:
    """Write ``{"model": state_dict}``, the official format (atomically: a failed write raises
    ``PixelSplatOutputError`` and leaves the previous file whole)."""
    path = Path(path)
    payload = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with output_errors(path), atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def _official_layout(rays: WideBaselineRays, query_c2w: Tensor) -> dict[str, Tensor]:
    """One chunk of rays in the official output layouts (views flattened into the batch)."""
    views = "(b v)"
    to_query = torch.linalg.inv(query_c2w)[:, None]  # b 1 4 4
    depth = transform(to_query, rays.official_depth_point, 1.0)[..., 2].clamp(0, 10)
    geometry = rays.geometry
    return {
        "rgb": rays.rgb[:, None],
        "valid_mask": rays.valid[..., None].float(),
        "depth_ray": depth[..., None],
        "at_wt": rearrange(rays.attention, f"b v r s -> {views} r s"),
        "at_wt_round2": rearrange(rays.attention_round2, f"b v r s -> {views} r s"),
        "at_wt_max": rearrange(rays.attention.argmax(dim=-1).float(), f"b v r -> {views} r 1"),
        "pixel_val": rearrange(rays.sample_grid, f"b v r s xy -> {views} r s xy"),
        "coords": rearrange(rays.coords, f"b v r c -> {views} r c"),
        # Intermediates the parity fixture records.
        "epipolar_xy_min": rearrange(geometry.xy_min, f"b v r xy -> {views} r xy"),
        "epipolar_xy_max": rearrange(geometry.xy_max, f"b v r xy -> {views} r xy"),
        "epipolar_overlaps_image": rearrange(geometry.valid.float(), f"b v r -> {views} r"),
        # Entry j: the other context's samples projected into image j.
        "pixel_val_other": rearrange(other_view(geometry.other_grid), f"b v r s xy -> {views} r s xy"),
        "sample_points": rearrange(rays.sample_points_local, f"b v r s c -> {views} r s c"),
        "local_coords": rearrange(geometry.local_geometry, f"b v r s c -> {views} c r s"),
        "phi_input": rays.decoder_input,
    }


@torch.no_grad()
def render_rays(model: WideBaselineNetwork, inputs: Mapping[str, Tensor], chunk_size: int = 1024) -> dict[str, Tensor]:
    """Run the model on a parity fixture's ``inputs`` as the official code does
    (``get_z`` then the forward on the query pixels, ``chunk_size`` rays at a time).

    ``inputs``: ``context_rgb`` [b, 2, h, w, 3] in [-1, 1], ``context_cam2world`` [b, 2, 4,
    4] (OpenCV), ``context_intrinsics`` [b, 2, 4, 4] (integer-centre pixels),
    ``query_cam2world`` [b, 1, 4, 4], ``query_intrinsics`` [b, 1, 4, 4], ``query_uv`` [b, 1,
    R, 2] (x = column). Returns the official outputs ``rgb`` [b, 1, R, 3], ``valid_mask``
    [b, R, 1], ``depth_ray`` [b, R, 1], ``at_wt`` / ``at_wt_round2`` [2b, R, S], ``at_wt_max``
    [2b, R, 1], ``pixel_val`` [2b, R, S, 2], ``coords`` [2b, R, 9], ``z`` (list of [b, 2, c,
    h, w]) and the fixture's intermediates (``epipolar_*``, ``pixel_val_other``,
    ``sample_points``, ``local_coords``, ``phi_input``) in its layouts.
    """
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype

    def get(name: str) -> Tensor:
        return inputs[name].to(device=device, dtype=dtype)

    images = rearrange((get("context_rgb") + 1) / 2, "b v h w c -> b v c h w")
    context_c2w = get("context_cam2world")
    context_k = get("context_intrinsics")[..., :3, :3]
    query_c2w = get("query_cam2world")[:, 0]
    query_k = get("query_intrinsics")[:, 0, :3, :3]
    uv = get("query_uv")[:, 0]  # b r 2

    z = model.encode(images, context_c2w)
    origins, directions = pixel_rays(uv, query_c2w[:, None], query_k[:, None])
    chunks = [
        _official_layout(
            model.render(z, context_c2w, context_k, origins[:, i : i + chunk_size], directions[:, i : i + chunk_size]),
            query_c2w,
        )
        for i in range(0, uv.shape[1], chunk_size)
    ]
    out: dict[str, Any] = {
        name: torch.cat([chunk[name] for chunk in chunks], dim=_RAY_AXIS.get(name, 1)) for name in chunks[0]
    }
    out["z"] = z
    return out
