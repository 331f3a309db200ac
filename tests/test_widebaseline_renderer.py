"""The wide-baseline (Du et al.) renderer, network and official API against the official model.

Parity with ``parity_a.pt`` (made by the official code with the README's deterministic
weights) at three depths: the geometry alone (no weights), the learned chain started from
the fixture's recorded features (4 rays), and ``render_rays`` end to end (encoder included,
~10 s on two CPU cores, once per module). Tolerances are the README's.

Ill-conditioned samples: where a sample's camera ray is within ~0.2 degrees of the query ray
(the sample sits at the vanishing point), the closest point on the query ray moves by
centimetres for a 1e-4-pixel change of the sample, so float32 rounding of the inputs
decides it (the official float32 and float64 runs differ there too). Quantities derived
from that point (``sample_points``, ``local_coords``' distance channels, ``pixel_val_other``)
are compared where sin(angle) > 3e-3: 347 of the fixture's 32,768 samples are left out.

Then properties on the small preset: samples on the epipolar line the fundamental matrix
predicts and evenly spaced on the image plane, attention weights summing to 1, chunked
rendering equal to one pass, checkpoints that load or fail in one clear line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
import torch
from einops import rearrange
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pixelsplat_ns.cameras import (
    nerfstudio_to_widebaseline_intrinsics,
    widebaseline_grid_to_pixels,
    widebaseline_grid_to_plane,
    widebaseline_normalize_intrinsics,
    widebaseline_pixels_to_grid,
    widebaseline_plane_to_grid,
    widebaseline_to_nerfstudio_intrinsics,
)
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.fixture_weights import deterministic_tensor, fill_deterministic_widebaseline
from pixelsplat_ns.widebaseline.config import WideBaselineConfig
from pixelsplat_ns.widebaseline.geometry import RayGeometry, pixel_rays, ray_geometry
from pixelsplat_ns.widebaseline.network import WideBaselineNetwork
from pixelsplat_ns.widebaseline.official import load_checkpoint, render_rays, save_checkpoint
from pixelsplat_ns.widebaseline.renderer import WideBaselineRays, WideBaselineRenderer

from .conftest import SHARED, require

DU_FIXTURES = SHARED / "fixtures" / "du-official"
GEOMETRY_TOLERANCE = 1e-4
COLOUR_TOLERANCE = 5e-3
ATTENTION_TOLERANCE = 1e-4
DEPTH_TOLERANCE = 5e-3
WELL_CONDITIONED_SINE = 3e-3


def load_fixture() -> dict:
    return torch.load(require(DU_FIXTURES / "parity_a.pt"), weights_only=True)


def manifest() -> dict:
    return json.loads(require(DU_FIXTURES / "checkpoint_keys.json").read_text())


def fixture_rays(inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """World rays [1, R, 3] of the fixture's query pixels."""
    c2w = inputs["query_cam2world"][:, 0]
    k = inputs["query_intrinsics"][:, 0, :3, :3]
    return pixel_rays(inputs["query_uv"][:, 0], c2w[:, None], k[:, None])


def fixture_geometry(inputs: dict[str, Tensor], rays: slice = slice(None)) -> RayGeometry:
    origins, directions = fixture_rays(inputs)
    return ray_geometry(
        inputs["context_cam2world"],
        inputs["context_intrinsics"][..., :3, :3],
        origins[:, rays],
        directions[:, rays],
        image_size=256,
        num_samples=64,
    )


def well_conditioned(geometry: RayGeometry) -> Tensor:
    """[b v r s]: the sample's camera ray is not (nearly) parallel to the query ray."""
    cosine = (geometry.sample_directions * geometry.directions[..., None, :]).sum(-1).clamp(-1, 1)
    return (1 - cosine**2).clamp_min(0).sqrt() > WELL_CONDITIONED_SINE


def flat_views(x: Tensor) -> Tensor:
    """[1, v, ...] -> [v, ...] (the official layouts flatten batch and view)."""
    return rearrange(x, "b v ... -> (b v) ...")


def max_abs(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    error = (a - b).abs()
    if mask is not None:
        error = error[mask]
    return float(error.max())


# --------------------------------------------------------------------------------------
# Geometry (no weights)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture()


@pytest.fixture(scope="module")
def geometry(fixture: dict) -> RayGeometry:
    return fixture_geometry(fixture["inputs"])


def test_geometry_parity(fixture: dict, geometry: RayGeometry) -> None:
    outputs, recorded = fixture["outputs"], fixture["intermediates"]
    assert max_abs(flat_views(geometry.coords), outputs["coords"]) < GEOMETRY_TOLERANCE
    assert max_abs(flat_views(geometry.sample_grid), outputs["pixel_val"]) < GEOMETRY_TOLERANCE
    assert max_abs(flat_views(geometry.xy_min), recorded["epipolar_xy_min"]) < GEOMETRY_TOLERANCE
    assert max_abs(flat_views(geometry.xy_max), recorded["epipolar_xy_max"]) < GEOMETRY_TOLERANCE
    assert torch.equal(flat_views(geometry.valid).float(), recorded["epipolar_overlaps_image"])
    assert torch.equal(geometry.valid.any(dim=1)[..., None].float(), outputs["valid_mask"])

    conditioned = flat_views(well_conditioned(geometry))
    assert conditioned.float().mean() > 0.98
    local = rearrange(recorded["local_coords"], "v c r s -> v r s c")
    assert max_abs(flat_views(geometry.local_geometry), local, conditioned) < GEOMETRY_TOLERANCE
    # Channels that do not depend on the sample's 3D point match everywhere.
    exact = [*range(9), 13, 14, 15]
    assert max_abs(flat_views(geometry.local_geometry)[..., exact], local[..., exact]) < GEOMETRY_TOLERANCE

    # Entry j of the official tensor: the *other* context's samples projected into image j.
    other = flat_views(geometry.other_grid.flip(1))
    reference = recorded["pixel_val_other"]
    inside = (reference.abs().amax(-1) < 3) & conditioned.flip(0)
    assert max_abs(other, reference, inside) < GEOMETRY_TOLERANCE

    points, reference = flat_views(geometry.points_local), recorded["sample_points"]
    near = (reference.norm(dim=-1) < 50) & conditioned
    relative = (points - reference).norm(dim=-1) / reference.norm(dim=-1)
    assert float(relative[near].max()) < 1e-3


def test_sample_pixels_and_world_points(fixture: dict, geometry: RayGeometry) -> None:
    """``sample_xy`` is ``pixel_val`` in pixels of the intrinsics' convention; world points
    lie on the query rays."""
    xy = geometry.sample_xy
    assert torch.allclose(xy, (geometry.sample_grid + 1) / 2 * 256)
    origins, directions = fixture_rays(fixture["inputs"])
    c2w = fixture["inputs"]["context_cam2world"]
    world = torch.einsum("bvij,bvrsj->bvrsi", c2w[:, :, :3, :3], geometry.points_local) + c2w[:, :, None, None, :3, 3]
    offset = world - origins[:, None, :, None]
    along = (offset * directions[:, None, :, None]).sum(-1, keepdim=True)
    off_ray = (offset - along * directions[:, None, :, None]).norm(dim=-1)
    near = world.norm(dim=-1) < 50
    assert float(off_ray[near].max()) < 1e-3


# --------------------------------------------------------------------------------------
# The learned chain from the fixture's recorded features (4 rays, renderer weights only)
# --------------------------------------------------------------------------------------


def recipe_renderer(cfg: WideBaselineConfig | None = None) -> WideBaselineRenderer:
    renderer = WideBaselineRenderer(cfg or WideBaselineConfig.official()).eval()
    with torch.no_grad():
        for key, value in renderer.state_dict(keep_vars=True).items():
            value.copy_(deterministic_tensor(key, value.shape, embed_rule="contains"))
    return renderer


@torch.no_grad()
def test_learned_chain_from_recorded_features(fixture: dict) -> None:
    outputs, recorded = fixture["outputs"], fixture["intermediates"]
    rays = [int(i) for i in recorded["feature_ray_index"]]
    assert rays == list(range(rays[0], rays[0] + len(rays)))
    selection = slice(rays[0], rays[-1] + 1)
    geometry = fixture_geometry(fixture["inputs"], selection)
    renderer = recipe_renderer()

    def channels_last(x: Tensor) -> Tensor:
        return rearrange(x, "v c r s -> 1 v r s c")

    # features_primary[j]: image j at context j's samples; features_other[j]: image j at the
    # other context's samples, which ``other`` holds at index 1 - j.
    own = channels_last(recorded["features_primary"])
    other = channels_last(recorded["features_other"]).flip(1)
    encoded = renderer.pair_encodings(own, other, geometry)
    reference = channels_last(recorded["features_encoded"])
    conditioned = well_conditioned(geometry)
    scale = float(reference.abs().max())
    assert max_abs(encoded, reference, conditioned) < GEOMETRY_TOLERANCE * scale

    attention = renderer.attend(reference, geometry.local_geometry)
    assert max_abs(attention.keys, channels_last(recorded["key_val"])) < GEOMETRY_TOLERANCE
    assert max_abs(attention.queries, channels_last(recorded["coords_embed"]), conditioned) < GEOMETRY_TOLERANCE
    assert max_abs(flat_views(attention.weights), outputs["at_wt"][:, selection]) < ATTENTION_TOLERANCE
    assert max_abs(flat_views(attention.weights_round2), outputs["at_wt_round2"][:, selection]) < ATTENTION_TOLERANCE

    decoder_input = renderer.decoder_input(attention.feature, geometry.coords)
    assert max_abs(decoder_input, recorded["phi_input"][:, selection]) < COLOUR_TOLERANCE
    rgb = renderer.decode(decoder_input)
    assert max_abs(rgb, recorded["phi_output"][:, selection]) < COLOUR_TOLERANCE
    assert max_abs(rgb, outputs["rgb"][:, 0, selection]) < COLOUR_TOLERANCE


# --------------------------------------------------------------------------------------
# End to end: render_rays with the recipe weights
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_network() -> WideBaselineNetwork:
    return fill_deterministic_widebaseline(WideBaselineNetwork(WideBaselineConfig.official())).eval()


@pytest.fixture(scope="module")
def rendered(fixture: dict, recipe_network: WideBaselineNetwork) -> dict[str, Tensor]:
    return render_rays(recipe_network, fixture["inputs"], chunk_size=128)


def test_render_rays_parity(fixture: dict, rendered: dict[str, Tensor]) -> None:
    outputs, recorded = fixture["outputs"], fixture["intermediates"]
    for name in ("rgb", "valid_mask", "depth_ray", "at_wt", "at_wt_round2", "at_wt_max", "pixel_val", "coords"):
        assert rendered[name].shape == outputs[name].shape, name
    assert rendered["phi_input"].shape == recorded["phi_input"].shape

    assert max_abs(rendered["rgb"], outputs["rgb"]) < COLOUR_TOLERANCE
    assert max_abs(rendered["phi_input"], recorded["phi_input"]) < COLOUR_TOLERANCE
    assert max_abs(rendered["at_wt"], outputs["at_wt"]) < ATTENTION_TOLERANCE
    assert max_abs(rendered["at_wt_round2"], outputs["at_wt_round2"]) < ATTENTION_TOLERANCE
    agreement = (rendered["at_wt_max"] == outputs["at_wt_max"]).float().mean()
    assert agreement >= 0.99
    assert max_abs(rendered["depth_ray"], outputs["depth_ray"]) < DEPTH_TOLERANCE
    assert torch.equal(rendered["valid_mask"], outputs["valid_mask"])
    assert max_abs(rendered["pixel_val"], outputs["pixel_val"]) < GEOMETRY_TOLERANCE
    assert max_abs(rendered["coords"], outputs["coords"]) < GEOMETRY_TOLERANCE
    assert [tuple(z.shape) for z in rendered["z"]] == [(1, 2, 256, 64, 64), (1, 2, 256, 128, 128), (1, 2, 64, 256, 256)]


def test_network_keys_are_the_official_manifest(recipe_network: WideBaselineNetwork) -> None:
    entries = manifest()
    official = [(entry["key"], tuple(entry["shape"])) for entry in entries["keys"]]
    ours = [(key, tuple(value.shape)) for key, value in recipe_network.state_dict().items()]
    assert ours == official
    assert sorted(recipe_network.unused_state_keys()) == sorted(entries["unused_keys"])


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path, recipe_network: WideBaselineNetwork) -> None:
    state = recipe_network.state_dict()
    official = tmp_path / "model_current.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}}, official)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    saved = save_checkpoint(recipe_network, tmp_path / "saved" / "model.pth")
    for path in (official, bare, saved):
        loaded = load_checkpoint(path)
        assert not loaded.training
        assert list(loaded.state_dict()) == list(state)
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())
    assert set(torch.load(saved, weights_only=True)) == {"model"}


def one_line_error(path) -> str:
    with pytest.raises(PixelSplatInputError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_checkpoint_errors_are_one_clear_line(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "model_current.pth"
    assert "does not exist" in one_line_error(missing)

    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, foreign)
    message = one_line_error(foreign)
    assert "not an official wide-baseline" in message and "place" in message

    pixelsplat = tmp_path / "pixelsplat.ckpt"
    torch.save({"state_dict": {"encoder.backbone.weight": torch.zeros(3)}}, pixelsplat)
    assert "not a wide-baseline checkpoint" in one_line_error(pixelsplat)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    assert "not a readable PyTorch checkpoint" in one_line_error(garbage)

    wrong_shape = tmp_path / "one_view.pth"
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in WideBaselineNetwork().state_dict().items()}
    state = {key: torch.zeros(shape) for key, shape in shapes.items()}
    state["phi.lin_in.weight"] = torch.zeros(128, 9)
    torch.save({"model": state}, wrong_shape)
    assert "phi.lin_in.weight" in one_line_error(wrong_shape)


# --------------------------------------------------------------------------------------
# Properties (small preset, random weights and maps)
# --------------------------------------------------------------------------------------


def look_at(eye: Tensor, target: Tensor) -> Tensor:
    """OpenCV cam2world looking from ``eye`` at ``target`` (y down)."""
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, -1.0, 0.0])), dim=-1)
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.stack((right, down, forward), dim=-1)
    c2w[:3, 3] = eye
    return c2w


def scene(generator: torch.Generator, size: int, num_rays: int, query_depth: float = -4.0) -> dict[str, Tensor]:
    """Two context cameras and a query camera (at z = ``query_depth``; in front of the
    contexts and inside their view for -2) around a point, rays through random query pixels."""
    target = torch.zeros(3)
    positions = ((-1.0, 0.3, -4.0), (1.0, 0.3, -4.0), (0.2, 0.3, query_depth))
    eyes = [torch.tensor(p) + 0.1 * torch.randn(3, generator=generator) for p in positions]
    c2w = torch.stack([look_at(eye, target) for eye in eyes])
    focal = 1.2 * size
    k = torch.tensor([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]]).expand(3, 3, 3)
    uv = torch.rand(1, num_rays, 2, generator=generator) * (size - 1)
    origins, directions = pixel_rays(uv, c2w[2], k[2])
    return {"c2w": c2w, "k": k, "uv": uv, "origins": origins, "directions": directions}


def random_maps(cfg: WideBaselineConfig, generator: torch.Generator) -> list[Tensor]:
    s = cfg.image_size
    shapes = [(cfg.dpt_features, s // 4), (cfg.dpt_features, s // 2), (cfg.conv_map_channels, s)]
    return [torch.randn(1, 2, c, side, side, generator=generator) for c, side in shapes]


def skew(t: Tensor) -> Tensor:
    x, y, z = t.tolist()
    return torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]])


@pytest.mark.parametrize("query_depth", [-4.0, -2.0])
def test_samples_on_the_epipolar_line_evenly_spaced(query_depth: float) -> None:
    generator = torch.Generator().manual_seed(0)
    size = 128
    cameras = scene(generator, size, 200, query_depth)
    c2w, k = cameras["c2w"].double(), cameras["k"].double()
    geometry = ray_geometry(
        c2w[None, :2], k[None, :2], cameras["origins"].double(), cameras["directions"].double(), size, 32
    )
    assert geometry.valid.float().mean() > 0.5
    query = torch.cat((cameras["uv"][0].double(), torch.ones(200, 1, dtype=torch.float64)), dim=-1)
    for view in range(2):
        # Fundamental matrix from the query image to context image `view`.
        relative = torch.linalg.inv(c2w[view]) @ c2w[2]
        essential = skew(relative[:3, 3]).double() @ relative[:3, :3]
        fundamental = torch.linalg.inv(k[view]).T @ essential @ torch.linalg.inv(k[2])
        lines = query @ fundamental.T  # r 3
        valid = geometry.valid[0, view]
        xy = geometry.sample_xy[0, view]  # r s 2
        # sample_xy is in pixels of the image plane the segment was clipped to ([0, size]^2).
        points = torch.cat((xy, torch.ones_like(xy[..., :1])), dim=-1)
        distance = (points @ lines[:, :, None])[..., 0].abs() / lines[:, None, :2].norm(dim=-1)
        assert float(distance[valid].max()) < 1e-6 * size
        steps = xy[:, 1:] - xy[:, :-1]
        assert float((steps - steps[:, :1]).abs()[valid].max()) < 1e-9 * size
        ends = torch.stack((geometry.xy_min[0, view], geometry.xy_max[0, view]), dim=1)[valid]
        assert bool(((ends >= -1e-6) & (ends <= 1 + 1e-6)).all())
        # A query camera in front of the context and inside its view: segments start at the
        # projection of the ray origin (the epipole), not at the border.
        origin = geometry.origins[0, view, 0]
        epipole = (k[view] @ (origin / origin[2]))[:2] / size
        starts_at_epipole = (geometry.xy_min[0, view] - epipole).norm(dim=-1) < 1e-6
        assert bool(starts_at_epipole.all()) == (query_depth == -2.0)


@torch.no_grad()
def test_attention_sums_to_one_and_chunks_equal_one_pass() -> None:
    cfg = WideBaselineConfig.small()
    torch.manual_seed(0)
    renderer = WideBaselineRenderer(cfg).eval()
    generator = torch.Generator().manual_seed(1)
    cameras = scene(generator, cfg.image_size, 64)
    z = random_maps(cfg, generator)
    args = (z, cameras["c2w"][None, :2], cameras["k"][None, :2])
    whole = renderer.render(*args, cameras["origins"], cameras["directions"])
    assert isinstance(whole, WideBaselineRays)

    for weights in (whole.attention, whole.attention_round2):
        assert torch.allclose(weights.sum(dim=(1, 3)), torch.ones(1, 64), atol=1e-5)
        assert bool((weights >= 0).all())
    assert bool((whole.entropy >= -1e-6).all())
    assert bool((whole.entropy <= math.log(2 * cfg.num_samples) + 1e-5).all())
    assert bool((whole.depth >= 0).all())
    assert torch.equal(whole.rgb[~whole.valid], torch.ones_like(whole.rgb[~whole.valid]))

    parts = [
        renderer.render(*args, cameras["origins"][:, i : i + 24], cameras["directions"][:, i : i + 24])
        for i in range(0, 64, 24)
    ]
    for name in ("rgb", "depth", "attention", "attention_round2", "sample_xy", "sample_points", "official_depth_point"):
        axis = 2 if getattr(whole, name).dim() >= 4 or name in ("attention", "attention_round2") else 1
        joined = torch.cat([getattr(part, name) for part in parts], dim=axis)
        assert torch.allclose(joined, getattr(whole, name), atol=1e-6, rtol=1e-6), name


class LargestResult(TorchDispatchMode):
    """Records the element count of the largest tensor any (non-view) operation creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, Tensor)]
            self.largest = max([self.largest, *sizes])
        return out


@torch.no_grad()
def test_nothing_scales_with_rays_times_image() -> None:
    """The renderer reads the maps only at the samples: no tensor it makes grows with the
    maps' size (e.g. no per-ray copy of a map, no dense cost volume)."""
    cfg = WideBaselineConfig.small()
    renderer = WideBaselineRenderer(cfg).eval()
    largest = {}
    for size in (128, 512):
        generator = torch.Generator().manual_seed(0)
        cameras = scene(generator, size, 4)
        z = random_maps(dataclasses.replace(cfg, image_size=size), generator)
        with LargestResult() as recorder:
            renderer.render(
                z, cameras["c2w"][None, :2], cameras["k"][None, :2], cameras["origins"], cameras["directions"]
            )
        largest[size] = recorder.largest
    assert largest[512] == largest[128]
    assert largest[128] <= 2 * 4 * cfg.num_samples * 2 * (cfg.feature_channels + 3)


def test_network_encodes_renders_and_trains_small_preset() -> None:
    cfg = WideBaselineConfig.small()
    torch.manual_seed(0)
    network = WideBaselineNetwork(cfg)
    generator = torch.Generator().manual_seed(2)
    cameras = scene(generator, cfg.image_size, 16)
    images = torch.rand(1, 2, 3, cfg.image_size, cfg.image_size, generator=generator)
    z = network.encode(images, cameras["c2w"][None, :2])
    assert [m.shape[2] for m in z] == [cfg.dpt_features, cfg.dpt_features, cfg.conv_map_channels]
    rays = network.render(
        z, cameras["c2w"][None, :2], cameras["k"][None, :2], cameras["origins"], cameras["directions"]
    )
    assert rays.rgb.shape == (1, 16, 3) and rays.sample_xy.shape == (1, 2, 16, cfg.num_samples, 2)
    assert bool(rays.rgb.isfinite().all())

    rays.rgb.square().mean().backward()
    used = [p for key, p in network.named_parameters() if key not in set(network.unused_state_keys())]
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in used)
    assert network.conv_map.weight.grad.abs().sum() > 0 and network.phi.lin_in.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# Conventions (cameras.py)
# --------------------------------------------------------------------------------------


def test_widebaseline_conventions_round_trip() -> None:
    k = torch.tensor([[350.0, 0.0, 160.0], [0.0, 352.0, 90.0], [0.0, 0.0, 1.0]])
    converted = nerfstudio_to_widebaseline_intrinsics(k, (70, 0), 256 / 180)
    assert torch.allclose(widebaseline_to_nerfstudio_intrinsics(converted, (70, 0), 256 / 180), k)
    # The centre of the crop (nerfstudio: 70 + 90 = 160 with +0.5 centres) is pixel 127.5 of 256.
    assert torch.isclose(converted[0, 2], torch.tensor(127.5))
    grid = torch.rand(10, 2) * 2 - 1
    assert torch.allclose(widebaseline_pixels_to_grid(widebaseline_grid_to_pixels(grid, 256), 256), grid, atol=1e-6)
    assert torch.allclose(widebaseline_plane_to_grid(widebaseline_grid_to_plane(grid)), grid, atol=1e-6)
    # Normalising K by the side and scaling plane points back by it are inverse.
    k_plane = widebaseline_normalize_intrinsics(converted, 256)
    point = torch.tensor([0.3, -0.2, 2.0])
    plane = (k_plane @ point)[:2] / point[2]
    assert torch.allclose(plane * 256, (converted @ point)[:2] / point[2], atol=1e-4)
