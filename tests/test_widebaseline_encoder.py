"""The wide-baseline (Du et al.) image encoder against the official model.

Keys and shapes against ``checkpoint_keys.json``; outputs against ``parity_a.pt``, made by
the official code with the README's deterministic weights (backbone maps and tokens within
1e-2 abs, the README's tolerance). The official forward takes ~8 s on two CPU cores, so it
runs once per module.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from einops import rearrange
from torch import Tensor

from pixelsplat_ns.fixture_weights import deterministic_tensor, deterministic_weights, fill_deterministic_widebaseline
from pixelsplat_ns.widebaseline.config import WideBaselineConfig
from pixelsplat_ns.widebaseline.image_encoder import WideBaselineImageEncoder, unused_state_keys

from .conftest import SHARED, require

DU_FIXTURES = SHARED / "fixtures" / "du-official"
ENCODER_PREFIXES = ("encoder.", "conv_map.")
TOLERANCE = 1e-2


def manifest_encoder_entries() -> list[dict]:
    manifest = json.loads(require(DU_FIXTURES / "checkpoint_keys.json").read_text())
    return [entry for entry in manifest["keys"] if entry["key"].startswith(ENCODER_PREFIXES)]


def key_pattern(key: str) -> str:
    """A key with its block indices elided: what two presets of one structure share."""
    return re.sub(r"\.blocks\.\d+\.", ".blocks.N.", key)


@pytest.fixture(scope="module")
def parity() -> dict[str, tuple[Tensor, Tensor]]:
    """name -> (ours, official) for every encoder intermediate of the fixture."""
    fixture = torch.load(require(DU_FIXTURES / "parity_a.pt"), weights_only=True)
    inputs, reference = fixture["inputs"], fixture["intermediates"]

    model = WideBaselineImageEncoder(WideBaselineConfig.official()).eval()
    shapes = {entry["key"]: entry["shape"] for entry in manifest_encoder_entries()}
    # Strict: the official file's encoder part loads as it is.
    model.load_state_dict(deterministic_weights(shapes, embed_rule="contains"), strict=True)

    recorded: dict[str, Tensor] = {}
    vit = model.encoder.pretrained.model
    hooked = {
        "stage0": vit.patch_embed.backbone.stages[0],
        "stage1": vit.patch_embed.backbone.stages[1],
        "block8": vit.blocks[8],
        "block11": vit.blocks[11],
        "path4": model.encoder.scratch.refinenet4,
        "path3": model.encoder.scratch.refinenet3,
    }
    for name, module in hooked.items():
        module.register_forward_hook(lambda _m, _i, output, name=name: recorded.__setitem__(name, output))

    # The official rgb is [-1, 1] channels-last; ours is [0, 1] channels-first.
    images = rearrange((inputs["context_rgb"] + 1) / 2, "b v h w c -> b v c h w")
    with torch.no_grad():
        z0, z1, z2 = model(images, inputs["context_cam2world"])

    ours = {
        "resnet_stage0_s4": recorded["stage0"][..., ::4, ::4],
        "resnet_stage1_s2": recorded["stage1"][..., ::2, ::2],
        "vit_block8_tokens": recorded["block8"],
        "vit_block11_tokens": recorded["block11"],
        "dpt_path4": recorded["path4"],
        "dpt_path3_s2": recorded["path3"][..., ::2, ::2],
        "z0_s2": rearrange(z0, "b v c h w -> (b v) c h w")[..., ::2, ::2],
        "z1_s4": rearrange(z1, "b v c h w -> (b v) c h w")[..., ::4, ::4],
        "z2_s8": rearrange(z2, "b v c h w -> (b v) c h w")[..., ::8, ::8],
        "z_channel_mean": torch.cat([z.mean(dim=(-2, -1)) for z in (z0, z1, z2)], dim=-1),
    }
    return {name: (value, reference[name]) for name, value in ours.items()}


@pytest.mark.parametrize(
    "name",
    [
        "resnet_stage0_s4",
        "resnet_stage1_s2",
        "vit_block8_tokens",
        "vit_block11_tokens",
        "dpt_path4",
        "dpt_path3_s2",
        "z0_s2",
        "z1_s4",
        "z2_s8",
        "z_channel_mean",
    ],
)
def test_official_parity(parity: dict[str, tuple[Tensor, Tensor]], name: str) -> None:
    ours, official = parity[name]
    assert ours.shape == official.shape
    error = (ours - official).abs().max().item()
    assert error < TOLERANCE, f"{name}: max abs error {error:.3g} (max |value| {official.abs().max().item():.3g})"


def test_official_keys_and_shapes_are_the_manifest() -> None:
    entries = manifest_encoder_entries()
    model = WideBaselineImageEncoder(WideBaselineConfig.official())
    ours = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    assert ours == [(entry["key"], entry["shape"]) for entry in entries]  # same order too
    assert all(value.dtype == torch.float32 for value in model.state_dict().values())
    assert unused_state_keys(model) == [entry["key"] for entry in entries if not entry["used_by_forward"]]


def test_small_preset_has_the_official_structure() -> None:
    official = [key_pattern(entry["key"]) for entry in manifest_encoder_entries()]
    small = WideBaselineImageEncoder(WideBaselineConfig.small())
    assert list(dict.fromkeys(key_pattern(key) for key in small.state_dict())) == list(dict.fromkeys(official))


def test_small_preset_forward_shapes_and_unused_weights() -> None:
    """The small preset runs; exactly the stored-but-unused weights get no gradient."""
    cfg = WideBaselineConfig.small()
    model = WideBaselineImageEncoder(cfg)
    images = torch.rand(1, 2, 3, cfg.image_size, cfg.image_size)
    c2w = torch.eye(4).repeat(1, 2, 1, 1)
    c2w[0, 1, :3, 3] = torch.tensor([0.3, 0.0, 0.1])
    z = model(images, c2w)
    side, f = cfg.image_size, cfg.dpt_features
    assert [tuple(map_.shape) for map_ in z] == [
        (1, 2, f, side // 4, side // 4),
        (1, 2, f, side // 2, side // 2),
        (1, 2, cfg.conv_map_channels, side, side),
    ]
    assert sum(map_.shape[2] for map_ in z) == cfg.feature_channels
    sum(map_.square().mean() for map_ in z).backward()
    without_gradient = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert without_gradient == unused_state_keys(model)


def test_batch_and_pose_handling() -> None:
    """Scenes in a batch are encoded independently; only relative poses matter; view 1's pose reaches view 0."""
    cfg = WideBaselineConfig.small()
    model = WideBaselineImageEncoder(cfg).eval()
    fill_deterministic_widebaseline(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, cfg.image_size, cfg.image_size, generator=generator)
    c2w = torch.eye(4).repeat(2, 2, 1, 1)
    c2w[:, 1, :3, 3] = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.2, 0.3]])
    with torch.no_grad():
        together = model(images, c2w)
        alone = [model(images[i : i + 1], c2w[i : i + 1]) for i in range(2)]
        # Moving both cameras rigidly leaves the relative pose, hence every feature, unchanged.
        shift = torch.eye(4)
        shift[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        shifted = model(images, shift @ c2w)
    for level in range(3):
        torch.testing.assert_close(together[level], torch.cat([a[level] for a in alone]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(shifted[level], together[level], atol=1e-4, rtol=1e-4)
    # Joint attention: the other view's pose reaches view 0's ViT features.
    with torch.no_grad():
        c2w_moved = c2w.clone()
        c2w_moved[:, 1, :3, 3] += 1.0
        moved = model(images, c2w_moved)
    assert (moved[0][:, 0] - together[0][:, 0]).abs().max() > 1e-4


def test_widebaseline_recipe_rule() -> None:
    """Du's recipe treats any key containing pos_embed/cls_token as an embedding; pixelSplat's only suffixes."""
    shape = (1, 577, 768)
    key = "encoder.pretrained.model.pos_embed_second"
    contains, endswith = deterministic_tensor(key, shape, "contains"), deterministic_tensor(key, shape)
    # Same draws, scaled 0.02 (embedding) vs 1 / sqrt(577 * 768) (other >= 2-d tensors).
    torch.testing.assert_close(contains, endswith * 0.02 * (577 * 768) ** 0.5)
    pose = "encoder.pretrained.model.pose_embed.weight"
    torch.testing.assert_close(deterministic_tensor(pose, (768, 16), "contains"), deterministic_tensor(pose, (768, 16)))

    model = fill_deterministic_widebaseline(WideBaselineImageEncoder(WideBaselineConfig.small()))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, deterministic_tensor(name, value.shape, "contains"), atol=0, rtol=0)
