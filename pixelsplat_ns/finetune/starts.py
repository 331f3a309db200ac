"""Where ``ns-train pixelsplat`` fine-tuning starts, and how its Gaussians are refined.

Three starts (``--pipeline.model.initialization``):

* ``prediction``: the encoder's Gaussians (``PixelSplatModel.predict_gaussians``), each moved along
  its ray to the depth where its context photo matches the nearest training photos best
  (``depth_sweep``; ``moved_along_rays``);
* ``points``: the prediction as a point cloud, as splatfacto seeds from one: a sample of the
  predicted Gaussians' centres (native ones and the backdrop behind them) with their colours,
  optionally moved along their cameras' rays by random factors (``spread_along_rays``: the
  encoder's depth is a guess the training views can correct), each as wide as its three nearest
  neighbours, random rotations, opacity 0.1 (``seed_point_params``);
* ``random``: splatfacto's start without points (``random_init``): the same from points uniform
  in a cube with random colours. It is what a user would otherwise train from, so the
  comparison is one flag.

All are refined by gsplat's ``DefaultStrategy`` (splatfacto's densification and pruning)
with splatfacto's settings, except for what a start that is already a scene needs: gsplat
resets every opacity at step 0 (harmless for a random cube at 0.1; it would cap a
prediction's opacities at ``2 * cull_alpha_thresh`` before the first step) and periodically
after, and splatfacto prunes below opacity 0.1, which would remove the faint Gaussians a
prediction blends; so a prediction keeps its opacities and loses only invisible Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy
from jaxtyping import Float, Int
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig, num_sh_bases, random_quat_tensor
from torch import Tensor

from pixelsplat_ns.gaussians import Gaussians


@dataclass
class RefinementStrategy(DefaultStrategy):
    """gsplat's ``DefaultStrategy`` that never resets opacities at step 0, and carries
    ``state["gaussian_pixels"]`` (where each Gaussian came from) through every split,
    duplication and prune, as gsplat's ops do for any per-Gaussian tensor in ``state``."""

    def step_post_backward(
        self,
        params: Any,
        optimizers: dict[str, torch.optim.Optimizer],
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
    ) -> None:
        if step == 0:  # gsplat would reset every opacity here (step % reset_every == 0)
            if step < self.refine_stop_iter:
                self._update_state(params, state, info, packed=packed)
            return
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)


def refinement_strategy(
    config: SplatfactoModelConfig, num_train_data: int, splatfacto_start: bool
) -> RefinementStrategy:
    """splatfacto's densification and pruning (its config fields, its schedule). splatfacto's starts
    (seeded points, the random cube) keep all of it; a prediction keeps its opacities (no periodic
    reset) and, unless ``cull_alpha_thresh`` is set, loses only Gaussians no render can show (opacity < 1/255):
    its faint Gaussians are a blend, and splatfacto's 0.1 would prune about 40 % of them.
    ``densify_grad_thresh`` is for plain gradients (the CPU rasteriser has no absgrad)."""
    never = 1 << 30
    prune = config.cull_alpha_thresh
    if prune is None:
        prune = 0.1 if splatfacto_start else 1 / 255
    return RefinementStrategy(
        prune_opa=prune,
        grow_grad2d=config.densify_grad_thresh,
        grow_scale3d=config.densify_size_thresh,
        grow_scale2d=config.split_screen_size,
        prune_scale3d=config.cull_scale_thresh,
        prune_scale2d=config.cull_screen_size,
        refine_scale2d_stop_iter=config.stop_screen_size_at,
        refine_start_iter=config.warmup_length,
        refine_stop_iter=config.stop_split_at,
        reset_every=config.reset_alpha_every * config.refine_every if splatfacto_start else never,
        refine_every=config.refine_every,
        pause_refine_after_reset=num_train_data + config.refine_every if splatfacto_start else 0,
        absgrad=False,
        revised_opacity=False,
        verbose=False,
    )


def seed_point_params(
    means: Float[Tensor, "gaussian 3"], features_dc: Float[Tensor, "gaussian 3"], sh_degree: int, seed: int = 0
) -> dict[str, Float[Tensor, "gaussian ..."]]:
    """Gaussians seeded from points as splatfacto seeds them, as splatfacto's parameters (means,
    log-scales, wxyz quaternions, SH DC and rest, logit opacities): at the points, each as wide as
    the mean distance to its three nearest neighbours, seeded random rotations, the given SH DC
    colours, no higher bands, opacity 0.1."""
    count = means.shape[0]
    if count < 4:
        raise ValueError(f"seeding needs at least 4 points (their scale is the distance to 3 neighbours), got {count}")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # random_quat_tensor draws from the global generator
    try:
        quats = random_quat_tensor(count)
    finally:
        torch.random.set_rng_state(state)
    distances, _ = SplatfactoModel.k_nearest_sklearn(None, means, 3)  # type: ignore[arg-type]  # uses no state
    mean_distance = torch.from_numpy(distances).float().mean(dim=-1, keepdim=True)
    return {
        "means": means,
        "scales": mean_distance.log().repeat(1, 3),
        "quats": quats,
        "features_dc": features_dc,
        "features_rest": torch.zeros((count, num_sh_bases(sh_degree) - 1, 3)),
        "opacities": torch.logit(torch.full((count, 1), 0.1)),
    }


def random_cube_params(
    count: int, side: float, sh_degree: int, seed: int = 0
) -> dict[str, Float[Tensor, "gaussian ..."]]:
    """splatfacto's ``random_init`` start (``seed_point_params``): ``count`` points uniform in a
    cube of side ``side`` centred on the origin of nerfstudio's normalised scene, random colours, seeded."""
    if count < 4:
        raise ValueError(
            f"a random start needs at least 4 Gaussians (their scale is the distance to 3 neighbours), got {count}"
        )
    generator = torch.Generator().manual_seed(seed)
    means = (torch.rand((count, 3), generator=generator) - 0.5) * side
    return seed_point_params(means, torch.rand((count, 3), generator=generator), sh_degree, seed)


def sample_points(count: int, available: int, seed: int = 0) -> Int[Tensor, " point"]:
    """Indices of ``count`` of ``available`` points, drawn without replacement (all when fewer), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(available, generator=generator)[: min(count, available)]


def spread_along_rays(
    points: Float[Tensor, "point 3"],
    origins: Float[Tensor, "point 3"],
    spread: float | Float[Tensor, " point"],
    seed: int = 0,
) -> Float[Tensor, "point 3"]:
    """Each point moved along its ray from its camera's origin to its distance times a factor drawn
    log-uniformly between ``1 / spread`` and ``spread`` (its own, or one for all; seeded; 1: unmoved).
    Seeds at depths around the predicted one let the training views pick the depth where the
    prediction's is wrong, as splatfacto's densification picks among a random cube's points."""
    spreads = torch.as_tensor(spread, dtype=points.dtype).expand(points.shape[0])
    if not bool(((spreads >= 1) & spreads.isfinite()).all()):
        raise ValueError(f"a spread is a finite factor of at least 1, got {spreads.min()} to {spreads.max()}")
    generator = torch.Generator().manual_seed(seed)
    exponent = torch.rand(points.shape[0], generator=generator) * 2 - 1  # uniform in [-1, 1]
    return origins + (points - origins) * torch.exp(exponent * spreads.log())[:, None]


def moved_along_rays(
    gaussians: Gaussians, origins: Float[Tensor, "gaussian 3"], factors: Float[Tensor, " gaussian"]
) -> Gaussians:
    """One batch of Gaussians moved along the rays from their cameras' ``origins`` to their distance times
    ``factors``, their extent scaled with it: each covers the same pixels of its own camera as before."""
    factor = factors[None, :, None]
    return Gaussians(
        origins[None] + factor * (gaussians.means - origins[None]),
        gaussians.covariances * factor[..., None].square(),
        gaussians.harmonics,
        gaussians.opacities,
        None if gaussians.scales is None else gaussians.scales * factor,
        gaussians.rotations,
    )


def seed_spreads(disagreement: Float[Tensor, " point"], least: float, most: float) -> Float[Tensor, " point"]:
    """Each seed's spread: how far the other context view puts its surface (``depth_disagreement``,
    a factor), kept between ``least`` and ``most`` (``most`` where the other view cannot tell)."""
    return disagreement.nan_to_num(posinf=most).clamp(least, most)
