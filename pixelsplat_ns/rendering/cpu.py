"""Differentiable CPU rasteriser with gsplat 1.4.0's semantics.

Pipeline (all cameras at once):

1. projection (EWA, ``eps2d`` dilation, 3-sigma radii, culling) and SH colours
   ``max(SH + 0.5, 0)``, plus the depth channel for ``"RGB+ED"``;
2. footprints and tile binning: per ``block x block`` tile, depth-sorted Gaussian lists
   that respect gsplat's 16x16 tile assignment (:mod:`.tiles`);
3. :class:`_Composite`: front-to-back alpha compositing with a hand-written backward.

Two implementations share this structure and produce the same results:

* **compiled** (:mod:`.native`, C++/OpenMP, built on first use): projection + SH with a
  hand-written vector-Jacobian product (used unless the cameras need gradients),
  counting-sort binning and SIMD compositing rows on 16x16 tiles;
* **pure PyTorch** (fallback when no compiler is available, and for channel counts other
  than 3/4): autograd projection/SH, sort-based binning, and compositing in rounds of
  ``chunk`` Gaussians on ``[tiles, pixels_per_tile, chunk]`` tensors, at most
  ``max_elements`` elements per round, so memory stays bounded whatever the scene.

Per pixel both follow gsplat's kernel exactly:

* ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with ``d = mean2d - (pixel + 0.5)``;
* ``alpha = min(0.999, opacity exp(-sigma))``; skipped if ``sigma < 0`` or ``alpha < 1/255``;
* stop before the Gaussian whose ``T (1 - alpha)`` would be ``<= 1e-4`` (it is *not*
  composited); ``colour = sum alpha_i T_i c_i + T_final background``, ``alpha = 1 - T_final``.

Transmittances are running products (sequential, as the kernel's ``T *= 1 - alpha``). The
backward pass replays the forward front to back, using the number of list entries each
pixel consumed (so termination is identical), with
``dL/dalpha_i = T_i g.c_i - (g.C_after_i + T_final g.bg - dL/dA T_final) / (1 - alpha_i)``,
``C_after_i = C_fg - sum_{j <= i} alpha_j T_j c_j``, and gsplat's rule that clamped
(0.999) alphas pass no gradient to sigma and opacity.

Shapes: ``C`` cameras, ``N`` Gaussians, ``M = C * N`` (camera, Gaussian) pairs flattened,
``D`` colour channels (+1 for the expected depth), ``H x W`` images. The PyTorch compositor
works on ``n_tiles`` tiles of ``pixels = block * block``, in groups of ``tiles``, one round
of ``chunk`` list entries at a time; a Gaussian's ``record`` is its ``6 + D`` packed values
(mean x, y, conic a, b, c, opacity, colour).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .projection import project_gaussians
from .sh import eval_sh
from .tiles import Footprints, TileBins, bin_gaussians, gaussian_footprints, gsplat_tiles_per_gauss

if TYPE_CHECKING:
    from .native import NativeKernels

__all__ = ["composite", "rasterize_torch"]

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4

# Tuning knobs (results do not depend on them beyond float rounding of sums).
DEFAULT_BLOCK = 4  # pure-PyTorch path
DEFAULT_BLOCK_NATIVE = 16  # compiled kernels
NATIVE_BLOCKS = (8, 16)
NATIVE_CHANNELS = (3, 4)
DEFAULT_CHUNK = 32
DEFAULT_MAX_ELEMENTS = 1 << 21


class _TileGeometry:
    """Pixel coordinates of each block tile, shared by forward and backward."""

    def __init__(self, bins: TileBins, width: int, height: int, dtype: torch.dtype, device: torch.device):
        b = bins.block
        self.pixels = b * b
        tile = torch.arange(bins.n_tiles, device=device)
        in_cam = tile % (bins.tiles_x * bins.tiles_y)
        # each tile's top-left pixel
        self.origin_x: Int[Tensor, " n_tiles"] = (in_cam % bins.tiles_x) * b
        self.origin_y: Int[Tensor, " n_tiles"] = torch.div(in_cam, bins.tiles_x, rounding_mode="floor") * b
        p = torch.arange(self.pixels, device=device)
        # pixel p of a tile is at column u, row v
        self.u: Int[Tensor, " pixels"] = p % b
        self.v: Int[Tensor, " pixels"] = torch.div(p, b, rounding_mode="floor")
        self.dtype = dtype
        # Local pixel features for the backward reductions: 1, u, v, u^2, uv, v^2.
        u, v = self.u.to(dtype), self.v.to(dtype)
        self.features: Float[Tensor, "pixels 6"] = torch.stack((torch.ones_like(u), u, v, u * u, u * v, v * v), dim=-1)
        self.width, self.height = width, height

    def centres(
        self, tiles: Int[Tensor, " tiles"]
    ) -> tuple[Float[Tensor, "tiles pixels"], Float[Tensor, "tiles pixels"]]:
        """Pixel-centre coordinates ``(x, y)`` of the given tiles' pixels."""
        px = (self.origin_x[tiles, None] + self.u[None, :]).to(self.dtype) + 0.5
        py = (self.origin_y[tiles, None] + self.v[None, :]).to(self.dtype) + 0.5
        return px, py

    def inside(self, tiles: Int[Tensor, " tiles"]) -> Bool[Tensor, "tiles pixels"]:
        """Which of the given tiles' pixels lie inside the image."""
        px = self.origin_x[tiles, None] + self.u[None, :]
        py = self.origin_y[tiles, None] + self.v[None, :]
        return (px < self.width) & (py < self.height)


def _tile_groups(bins: TileBins, pixels: int, chunk: int, max_elements: int) -> list[Int[Tensor, " tiles"]]:
    """Non-empty tiles, longest list first, in groups of at most ``max_elements / (pixels chunk)``."""
    nonempty = torch.nonzero(bins.count > 0).squeeze(1)
    if len(nonempty) == 0:
        return []
    order = torch.sort(bins.count[nonempty], descending=True, stable=True).indices
    tiles = nonempty[order]
    per_group = max(1, max_elements // (pixels * chunk))
    return list(torch.split(tiles, per_group))


def _alphas(
    packed: Float[Tensor, "tiles chunk record"], px: Float[Tensor, "tiles pixels"], py: Float[Tensor, "tiles pixels"]
) -> tuple[Float[Tensor, "tiles pixels chunk"], Bool[Tensor, "tiles pixels chunk"] | None]:
    """Alphas of one round, zeroed where gsplat skips the Gaussian.

    ``packed`` holds the round's Gaussian records (mx, my, a, b, c, opacity, colour...) with
    opacity 0 for padding; ``px``/``py`` are pixel centres. Also returns the mask of alphas
    clamped to 0.999 (None when there are none), where gsplat's backward passes no
    gradient to sigma and opacity.
    """
    # mean, conic (a, b, c) and opacity, each [tiles, 1, chunk]
    mx, my, ca, cb, cc, opac = (packed[:, None, :, k] for k in range(6))
    dx = mx - px[:, :, None]
    dy = my - py[:, :, None]
    sigma = torch.mul(ca, dx).mul_(dx)
    tmp = torch.mul(cc, dy)
    sigma.addcmul_(tmp, dy).mul_(0.5)
    torch.mul(cb, dx, out=tmp)
    sigma.addcmul_(tmp, dy)
    del dx, dy
    skip = torch.lt(sigma, 0.0, out=tmp.new_empty(tmp.shape, dtype=torch.bool))
    alpha = sigma.clamp_max_(80.0).neg_().exp_().mul_(opac)  # no subnormals (slow)
    clamped = alpha > ALPHA_MAX
    if bool(clamped.any()):
        alpha.clamp_max_(ALPHA_MAX)
    else:
        clamped = None
    skip |= alpha < ALPHA_MIN
    return alpha.masked_fill_(skip, 0.0), clamped


def _transmittances(
    T_run: Float[Tensor, "tiles pixels"], alpha: Float[Tensor, "tiles pixels chunk"]
) -> tuple[Float[Tensor, "tiles pixels chunk"], Float[Tensor, "tiles pixels chunk+1"]]:
    """``(1 - alpha, trans)`` with ``trans[..., k]`` the transmittance before entry ``k``
    (``trans[..., -1]`` after all), a running product seeded with ``T_run``."""
    n_tiles, n_pixels, n_entries = alpha.shape
    trans = alpha.new_empty(n_tiles, n_pixels, n_entries + 1)
    trans[:, :, 0] = T_run
    one_minus = torch.sub(1.0, alpha, out=trans[:, :, 1:])
    one_minus = one_minus.clone()
    torch.cumprod(trans, dim=-1, out=trans)
    return one_minus, trans


def _gather_round(
    packed_all: Float[Tensor, "M record"], bins: TileBins, tiles: Int[Tensor, " tiles"], first: int, chunk: int
) -> tuple[Float[Tensor, "tiles chunk record"], Int[Tensor, "tiles chunk"]]:
    """Records and Gaussian ids of rows ``first .. first + chunk`` of the given tiles' lists,
    padded with opacity 0."""
    pos = first + torch.arange(chunk, device=tiles.device)
    count = bins.count[tiles]
    in_list = pos[None, :] < count[:, None]  # [tiles, chunk]
    idx = bins.start[tiles, None] + torch.minimum(pos[None, :], (count[:, None] - 1).clamp_min(0))
    gids = bins.gauss_ids[idx]  # [tiles, chunk]
    packed = packed_all[gids]
    packed[..., 5].masked_fill_(~in_list, 0.0)
    return packed, gids


def _forward_torch(
    packed_all: Float[Tensor, "M record"], bins: TileBins, geometry: _TileGeometry, chunk: int, max_elements: int
) -> tuple[Float[Tensor, "n_tiles pixels"], Float[Tensor, "n_tiles pixels D"], Int[Tensor, "n_tiles pixels"]]:
    """Round-based compositing; returns tile-major ``(T_final, accum, consumed)``: final
    transmittance, colour sum and the number of list entries each pixel consumed."""
    n_channels = packed_all.shape[-1] - 6
    n_pixels = geometry.pixels
    dtype, device = packed_all.dtype, packed_all.device
    transmittance = torch.ones(bins.n_tiles, n_pixels, dtype=dtype, device=device)
    accum = torch.zeros(bins.n_tiles, n_pixels, n_channels, dtype=dtype, device=device)
    consumed = torch.zeros(bins.n_tiles, n_pixels, dtype=torch.int64, device=device)

    # per group (suffix _g): pixel centres, transmittance, colour sums, consumed entries
    for group in _tile_groups(bins, n_pixels, chunk, max_elements):
        px_g, py_g = geometry.centres(group)
        T_g = torch.ones(len(group), n_pixels, dtype=dtype, device=device)
        acc_g = torch.zeros(len(group), n_pixels, n_channels, dtype=dtype, device=device)
        used_g = torch.zeros(len(group), n_pixels, dtype=torch.int64, device=device)
        done_g = ~geometry.inside(group)
        count_g = bins.count[group]
        active = torch.arange(len(group), device=device)
        for r in range(math.ceil(int(count_g.max()) / chunk)):
            first = r * chunk
            if r > 0:
                active = active[(count_g[active] > first) & ~done_g[active].all(dim=1)]
                if len(active) == 0:
                    break
            tiles = group[active]
            packed, _ = _gather_round(packed_all, bins, tiles, first, chunk)
            done = done_g[active]
            alpha, _ = _alphas(packed, px_g[active], py_g[active])
            alpha.masked_fill_(done[:, :, None], 0.0)  # done pixels keep T (> 1e-4)
            _, trans = _transmittances(T_g[active], alpha)
            T_new = trans[:, :, -1].clone()
            n_ok = torch.full_like(used_g[active], chunk)
            stopped = T_new <= T_MIN  # some entry of this round would push T to <= 1e-4
            if bool(stopped.any()):
                ti, pi = torch.nonzero(stopped, as_tuple=True)
                ok = trans[ti, pi, 1:] > T_MIN  # a prefix: entries composited before stopping
                n_stop = ok.sum(-1)
                alpha[ti, pi] = alpha[ti, pi] * ok
                n_ok[ti, pi] = n_stop
                T_new[ti, pi] = trans[ti, pi, n_stop]
            weights = alpha.mul_(trans[:, :, :-1])
            acc_g[active] += torch.bmm(weights, packed[..., 6:])
            T_g[active] = T_new
            used_g[active] = torch.where(done, used_g[active], first + n_ok)
            done_g[active] = done | stopped
        transmittance[group] = T_g
        accum[group] = acc_g
        consumed[group] = used_g
    return transmittance, accum, consumed


def _backward_torch(
    packed_all: Float[Tensor, "M record"],
    bins: TileBins,
    geometry: _TileGeometry,
    chunk: int,
    max_elements: int,
    consumed: Int[Tensor, "n_tiles pixels"],
    v_color: Float[Tensor, "n_tiles pixels D"],
    g_total: Float[Tensor, "n_tiles pixels"],
) -> Float[Tensor, "M record"]:
    """Per-Gaussian gradients (mean2d, conic, opacity, colour: the record's layout) by
    replaying the forward rounds front to back. ``v_color`` is dL/dcolour per pixel,
    ``g_total`` the pixel's ``G_total`` (module docstring)."""
    n_channels = packed_all.shape[-1] - 6
    n_pixels = geometry.pixels
    dtype, device = packed_all.dtype, packed_all.device
    grads = torch.zeros(packed_all.shape[0], 6 + n_channels, dtype=dtype, device=device)
    features = geometry.features
    pos_b = torch.arange(chunk, device=device)  # entry positions within a round
    # per group (suffix _g): transmittance T and colour-gradient sum G of the entries so far
    for group in _tile_groups(bins, n_pixels, chunk, max_elements):
        px_g, py_g = geometry.centres(group)
        used_g = consumed[group]
        max_used = used_g.max(dim=1).values
        T_g = torch.ones(len(group), n_pixels, dtype=dtype, device=device)
        G_g = torch.zeros(len(group), n_pixels, dtype=dtype, device=device)
        vc_g, gt_g = v_color[group], g_total[group]
        ox = geometry.origin_x[group].to(dtype) + 0.5
        oy = geometry.origin_y[group].to(dtype) + 0.5
        active = torch.arange(len(group), device=device)
        for r in range(math.ceil(int(max_used.max()) / chunk)):
            first = r * chunk
            if r > 0:
                active = active[max_used[active] > first]
                if len(active) == 0:
                    break
            tiles = group[active]
            packed, gids = _gather_round(packed_all, bins, tiles, first, chunk)
            alpha, clamped = _alphas(packed, px_g[active], py_g[active])
            alpha.masked_fill_((first + pos_b)[None, None, :] >= used_g[active][:, :, None], 0.0)
            one_minus, trans = _transmittances(T_g[active], alpha)
            T_excl = trans[:, :, :-1]
            weights = alpha * T_excl  # [tiles, pixels, chunk]
            vc = vc_g[active]  # [tiles, pixels, D]
            gc = torch.bmm(vc, packed[..., 6:].transpose(1, 2))  # g . c_i  [tiles, pixels, chunk]
            upto = torch.mul(weights, gc).cumsum_(-1).add_(G_g[active][:, :, None])
            T_g[active] = trans[:, :, -1]
            G_g[active] = upto[:, :, -1]
            # dL/dalpha_i = T_i g.c_i - (G_total - G_upto_i) / (1 - alpha_i);  alpha * dL/dalpha:
            rest = upto.neg_().add_(gt_g[active][:, :, None]).div_(one_minus)
            a_va = rest.neg_().addcmul_(T_excl, gc).mul_(alpha)  # = -dL/dsigma
            if clamped is not None:
                a_va.masked_fill_(clamped, 0.0)
            sums = torch.matmul(a_va.transpose(1, 2), features)  # [tiles, chunk, 6]: 1, u, v, uu, uv, vv
            v_col = torch.bmm(weights.transpose(1, 2), vc)  # [tiles, chunk, D]

            s1, su, sv, suu, suv, svv = (-sums).unbind(-1)  # sums of dL/dsigma * feature
            mx, my, ca, cb, cc, opac = packed[..., :6].unbind(-1)  # [tiles, chunk]
            ddx = mx - ox[active, None]  # dx = ddx - u
            ddy = my - oy[active, None]
            sx = ddx * s1 - su  # sum dL/dsigma dx
            sy = ddy * s1 - sv
            sxx = ddx * ddx * s1 - 2 * ddx * su + suu
            syy = ddy * ddy * s1 - 2 * ddy * sv + svv
            sxy = ddx * ddy * s1 - ddx * sv - ddy * su + suv
            safe_opac = torch.where(opac > 0, opac, torch.ones_like(opac))
            g = torch.stack((ca * sx + cb * sy, cb * sx + cc * sy, 0.5 * sxx, sxy, 0.5 * syy, -s1 / safe_opac), dim=-1)
            grads.index_add_(0, gids.reshape(-1), torch.cat((g, v_col), dim=-1).reshape(-1, 6 + n_channels))
    return grads


class _Plan:
    """Everything the compositor needs besides the differentiable tensors."""

    def __init__(
        self,
        bins: TileBins,
        geometry: _TileGeometry,
        footprints: Footprints,
        kernels: NativeKernels | None,
        chunk: int,
        max_elements: int,
        expected_depth: bool,
    ):
        self.bins, self.geometry, self.footprints = bins, geometry, footprints
        self.kernels, self.chunk, self.max_elements = kernels, chunk, max_elements
        self.expected_depth = expected_depth  # the last channel is depth, divided by alpha
        # threads only pay off with enough work
        self.n_threads = max(1, min(torch.get_num_threads(), int(bins.gauss_ids.numel()) // 4096))


class _Composite(torch.autograd.Function):
    """Pure-PyTorch compositing (tile-major buffers, rounds of ``chunk`` Gaussians)."""

    @staticmethod
    def forward(
        ctx,
        means2d: Float[Tensor, "M 2"],
        conics: Float[Tensor, "M 3"],
        colors: Float[Tensor, "M D"],
        opacities: Float[Tensor, " M"],
        backgrounds: Float[Tensor, "C D"] | None,
        plan: _Plan,
    ) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
        packed_all = torch.cat((means2d, conics, opacities[:, None], colors), dim=-1).contiguous()
        transmittance, accum, consumed = _forward_torch(
            packed_all, plan.bins, plan.geometry, plan.chunk, plan.max_elements
        )
        ctx.save_for_backward(packed_all, backgrounds, transmittance, accum, consumed)
        ctx.plan = plan
        bins, geometry = plan.bins, plan.geometry
        n_cams = bins.n_tiles // (bins.tiles_x * bins.tiles_y)
        color = accum
        if backgrounds is not None:
            bg_tiles = backgrounds.repeat_interleave(bins.tiles_x * bins.tiles_y, dim=0)  # [n_tiles, D]
            color = accum + transmittance[:, :, None] * bg_tiles[:, None, :]
        alpha_out = 1.0 - transmittance
        return _tiles_to_image(color, bins, geometry, n_cams), _tiles_to_image(
            alpha_out[..., None], bins, geometry, n_cams
        )

    @staticmethod
    def backward(ctx, v_color_img: Float[Tensor, "C H W D"], v_alpha_img: Float[Tensor, "C H W 1"]):
        packed_all, backgrounds, transmittance, accum, consumed = ctx.saved_tensors
        plan = ctx.plan
        bins, geometry = plan.bins, plan.geometry
        n_channels = packed_all.shape[-1] - 6
        v_color = _image_to_tiles(v_color_img, bins, geometry)  # [n_tiles, pixels, D]
        v_alpha = _image_to_tiles(v_alpha_img, bins, geometry)[..., 0]  # [n_tiles, pixels]

        # G_total = g.C_fg + T_final (g.bg - dL/dA)
        g_total = (v_color * accum).sum(-1) - transmittance * v_alpha
        v_bg = None
        if backgrounds is not None:
            bg_tiles = backgrounds.repeat_interleave(bins.tiles_x * bins.tiles_y, dim=0)
            g_total = g_total + transmittance * (v_color * bg_tiles[:, None, :]).sum(-1)
            per_tile = (v_color * transmittance[:, :, None]).sum(1)  # [n_tiles, D]
            v_bg = per_tile.reshape(-1, bins.tiles_x * bins.tiles_y, n_channels).sum(1)

        grads = _backward_torch(packed_all, bins, geometry, plan.chunk, plan.max_elements, consumed, v_color, g_total)
        v_means2d, v_conics, v_opac, v_colors = grads.split((2, 3, 1, n_channels), dim=-1)
        return v_means2d, v_conics, v_colors, v_opac[:, 0], v_bg, None


class _CompositeNative(torch.autograd.Function):
    """Compiled compositing: image-layout outputs, the ED division done in the kernel."""

    @staticmethod
    def forward(
        ctx,
        means2d: Float[Tensor, "M 2"],
        conics: Float[Tensor, "M 3"],
        colors: Float[Tensor, "M D"],
        opacities: Float[Tensor, " M"],
        backgrounds: Float[Tensor, "C D"] | None,
        plan: _Plan,
    ) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
        height, width = plan.geometry.height, plan.geometry.width
        fp = plan.footprints
        raw, out, alpha, T, used = plan.kernels.composite_forward(
            means2d,
            conics,
            opacities,
            colors,
            backgrounds,
            plan.expected_depth,
            plan.bins,
            fp.rects,
            fp.sigma_cut,
            width,
            height,
            plan.n_threads,
        )
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, raw, T, used)
        ctx.plan = plan
        return out, alpha

    @staticmethod
    def backward(ctx, v_render: Float[Tensor, "C H W D"] | None, v_alpha: Float[Tensor, "C H W 1"] | None):
        means2d, conics, colors, opacities, backgrounds, raw, T, used = ctx.saved_tensors
        plan = ctx.plan
        fp = plan.footprints
        v_render = v_render.contiguous() if v_render is not None else torch.zeros_like(raw)
        v_alpha = v_alpha.contiguous() if v_alpha is not None else torch.zeros_like(T)
        v_means2d, v_conics, v_opac, v_colors, v_bg = plan.kernels.composite_backward(
            means2d,
            conics,
            opacities,
            colors,
            backgrounds,
            plan.expected_depth,
            plan.bins,
            fp.rects,
            fp.sigma_cut,
            plan.geometry.width,
            plan.geometry.height,
            raw,
            T,
            used,
            v_render,
            v_alpha,
            plan.n_threads,
        )
        return v_means2d, v_conics, v_colors, v_opac, v_bg, None


def _tiles_to_image(
    x: Float[Tensor, "n_tiles pixels D"], bins: TileBins, geometry: _TileGeometry, n_cams: int
) -> Float[Tensor, "C H W D"]:
    """Tile-major pixels to images."""
    b = bins.block
    img = x.reshape(n_cams, bins.tiles_y, bins.tiles_x, b, b, x.shape[-1])
    img = img.permute(0, 1, 3, 2, 4, 5).reshape(n_cams, bins.tiles_y * b, bins.tiles_x * b, x.shape[-1])
    return img[:, : geometry.height, : geometry.width].contiguous()


def _image_to_tiles(
    img: Float[Tensor, "C H W D"], bins: TileBins, geometry: _TileGeometry
) -> Float[Tensor, "n_tiles pixels D"]:
    """Images to tile-major pixels (zero padded)."""
    b = bins.block
    C, H, W, D = img.shape
    pad = img.new_zeros(C, bins.tiles_y * b, bins.tiles_x * b, D)
    pad[:, :H, :W] = img
    tiles = pad.reshape(C, bins.tiles_y, b, bins.tiles_x, b, D).permute(0, 1, 3, 2, 4, 5)
    return tiles.reshape(C * bins.tiles_y * bins.tiles_x, b * b, D)


class _NativeProject(torch.autograd.Function):
    """Projection + SH colours (+ depth channel) + footprints with the compiled kernels
    (hand-written vector-Jacobian product)."""

    @staticmethod
    def forward(
        ctx,
        means: Float[Tensor, "N 3"],
        quats: Float[Tensor, "N 4"],
        scales: Float[Tensor, "N 3"],
        sh: Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"] | Float[Tensor, " 0"],
        opacities: Float[Tensor, " N"],
        viewmats: Float[Tensor, "C 4 4"],
        Ks: Float[Tensor, "C 3 3"],
        campos: Float[Tensor, "C 3"],
        config: tuple,
    ):
        """``sh`` is empty without SH; ``config`` = (kernels, sh_degree, expected_depth,
        width, height, settings, n_threads)."""
        kernels, sh_degree, expected_depth, width, height, settings, n_threads = config
        sh_arg = sh if sh.numel() else None
        radii, means2d, depths, conics, colors, rects, sigma_cut, tiles_per_gauss = kernels.project_forward(
            means,
            quats,
            scales,
            opacities,
            sh_arg,
            sh_degree,
            expected_depth,
            viewmats,
            Ks,
            campos,
            width,
            height,
            settings,
            n_threads,
        )
        if colors is None:
            colors = means2d.new_zeros(0)
        ctx.save_for_backward(means, quats, scales, sh, opacities, viewmats, Ks, campos, radii)
        ctx.config = config
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(radii, rects, sigma_cut, tiles_per_gauss)
        return means2d, depths, conics, colors, radii, rects, sigma_cut, tiles_per_gauss

    @staticmethod
    def backward(ctx, v_means2d, v_depths, v_conics, v_colors, *_):
        means, quats, scales, sh, opacities, viewmats, Ks, campos, radii = ctx.saved_tensors
        kernels, sh_degree, expected_depth, width, height, settings, n_threads = ctx.config
        sh_arg = sh if sh.numel() else None
        v_means, v_quats, v_scales, v_sh = kernels.project_backward(
            means,
            quats,
            scales,
            opacities,
            sh_arg,
            sh_degree,
            expected_depth,
            viewmats,
            Ks,
            campos,
            width,
            height,
            settings,
            radii,
            v_means2d,
            v_depths,
            v_conics,
            v_colors if sh_arg is not None else None,
            n_threads,
        )
        if v_sh is None:
            v_sh = torch.zeros_like(sh)
        return v_means, v_quats, v_scales, v_sh, None, None, None, None, None


def _load_kernels(native: bool | None, dtype: torch.dtype, device: torch.device) -> NativeKernels | None:
    """The compiled kernels if ``native`` allows and they apply (see :func:`rasterize_torch`)."""
    if native is False or device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        if native:
            raise ValueError("native kernels need float32/float64 CPU tensors")
        return None
    from . import native as native_module

    kernels = native_module.load()
    if kernels is None and native:
        raise RuntimeError("native rasteriser kernels are not available")
    return kernels


def composite(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    colors: Float[Tensor, "C N D"],
    opacities: Float[Tensor, "C N"],
    footprints: Footprints,
    width: int,
    height: int,
    backgrounds: Float[Tensor, "C D"] | None = None,
    expected_depth: bool = False,
    block: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    kernels: NativeKernels | None = None,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"], int]:
    """Differentiable front-to-back compositing of projected Gaussians.

    ``expected_depth``: the last channel is divided by ``max(alpha, 1e-10)`` (gsplat's
    "ED"). ``kernels``: the compiled kernels (:mod:`.native`) or None for the PyTorch path.
    Returns ``(render, alpha, n_isects)``.
    """
    C, N = opacities.shape
    if kernels is not None and (colors.shape[-1] not in NATIVE_CHANNELS or block not in (None, *NATIVE_BLOCKS)):
        kernels = None  # the compiled compositor covers RGB / RGB+ED on 8x8 or 16x16 tiles
    if block is None:
        block = DEFAULT_BLOCK_NATIVE if kernels is not None else DEFAULT_BLOCK
    if kernels is not None:
        tiles_x, tiles_y = math.ceil(width / block), math.ceil(height / block)
        n_tiles = C * tiles_x * tiles_y
        ids, start, count = kernels.bin(footprints.ids, footprints.rects, N, block, tiles_x, tiles_y, n_tiles)
        bins = TileBins(block, tiles_x, tiles_y, n_tiles, ids, start, count)
        if len(count) and int(count.max()) >= 1 << 24:
            kernels = None  # list positions are kept as floats in the compiled kernels
    else:
        bins = bin_gaussians(footprints, C, N, width, height, block=block)
    geometry = _TileGeometry(bins, width, height, colors.dtype, colors.device)
    plan = _Plan(bins, geometry, footprints, kernels, chunk, max_elements, expected_depth)
    args = (
        means2d.reshape(C * N, 2),
        conics.reshape(C * N, 3),
        colors.reshape(C * N, colors.shape[-1]),
        opacities.reshape(C * N),
        backgrounds,
        plan,
    )
    if kernels is not None:
        args = tuple(a.contiguous() if isinstance(a, Tensor) else a for a in args)
        render, alpha = _CompositeNative.apply(*args)
    else:
        render, alpha = _Composite.apply(*args)
        if expected_depth:
            render = torch.cat((render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)), dim=-1)
    return render, alpha, int(bins.gauss_ids.numel())


def rasterize_torch(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Float[Tensor, "N D"] | Float[Tensor, "C N D"] | Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    sh_degree: int | None = None,
    backgrounds: Float[Tensor, "C D"] | None = None,
    render_mode: str = "RGB",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    block: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    native: bool | None = None,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"], dict]:
    """The CPU backend of :func:`pixelsplat_ns.rendering.rasterize` (inputs already validated).

    ``native``: use the compiled kernels (True: required, None: when they build, False:
    never). ``block``/``chunk``/``max_elements`` tune the tiling (``block`` divides 16;
    ``chunk``/``max_elements`` only matter for the PyTorch path).
    """
    C, N = viewmats.shape[0], means.shape[0]
    dtype, device = means.dtype, means.device
    kernels = _load_kernels(native, dtype, device)
    opac = opacities[None, :].expand(C, N)  # per (camera, Gaussian)
    settings = dict(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip)
    expected_depth = render_mode == "RGB+ED"
    if expected_depth and backgrounds is not None:
        backgrounds = torch.cat((backgrounds, backgrounds.new_zeros(C, 1)), dim=-1)
    # The compiled projection has no gradient for cameras (e.g. camera optimisation).
    native_projection = kernels is not None and not (viewmats.requires_grad or Ks.requires_grad)

    if native_projection:
        n_threads = max(1, min(torch.get_num_threads(), (C * N) // 8192))
        campos = torch.linalg.inv(viewmats.detach())[:, :3, 3].contiguous()
        sh = colors.contiguous() if sh_degree is not None else means.new_zeros(0)
        # feats: the colours to composite (SH evaluated, + depth channel), [C, N, D]
        means2d, depths, conics, feats, radii, rects, sigma_cut, tiles_per_gauss = _NativeProject.apply(
            means.contiguous(),
            quats.contiguous(),
            scales.contiguous(),
            sh,
            opacities.detach().contiguous(),
            viewmats.detach().contiguous(),
            Ks.detach().contiguous(),
            campos,
            (kernels, sh_degree, expected_depth and sh_degree is not None, width, height, settings, n_threads),
        )
        if sh_degree is None:
            feats = colors.expand(C, *colors.shape[-2:]) if colors.dim() == 2 else colors
            if expected_depth:
                feats = torch.cat((feats, depths[..., None]), dim=-1)
        # candidates (radius > 0, opacity >= 1/255) have sigma_cut > 0
        footprints = Footprints(ids=kernels.depth_order(depths.detach(), sigma_cut), rects=rects, sigma_cut=sigma_cut)
    else:
        proj = project_gaussians(means, quats, scales, viewmats, Ks, width, height, **settings)
        means2d, depths, conics, radii = proj.means2d, proj.depths, proj.conics, proj.radii
        if sh_degree is None:
            feats = colors.expand(C, *colors.shape[-2:]) if colors.dim() == 2 else colors
        else:
            shs = colors.expand(C, *colors.shape[-3:]) if colors.dim() == 3 else colors
            campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
            dirs = means[None, :, :] - campos[:, None, :]
            feats = torch.clamp_min(eval_sh(sh_degree, dirs, shs) + 0.5, 0.0)
            feats = torch.where(proj.valid[..., None], feats, torch.zeros((), dtype=feats.dtype, device=feats.device))
        if expected_depth:
            feats = torch.cat((feats, depths[..., None]), dim=-1)
        footprints = gaussian_footprints(means2d, proj.cov2d, opac, radii, depths, width, height)
        tiles_per_gauss = gsplat_tiles_per_gauss(means2d, radii, width, height)

    render, alpha, n_isects = composite(
        means2d,
        conics,
        feats,
        opac,
        footprints,
        width,
        height,
        backgrounds=backgrounds,
        expected_depth=expected_depth,
        block=block,
        chunk=chunk,
        max_elements=max_elements,
        kernels=kernels,
    )
    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "tile_width": math.ceil(width / 16),
        "tile_height": math.ceil(height / 16),
        "tiles_per_gauss": tiles_per_gauss,
        "width": width,
        "height": height,
        "tile_size": 16,
        "n_cameras": C,
        "n_isects": n_isects,
    }
    return render, alpha, meta
