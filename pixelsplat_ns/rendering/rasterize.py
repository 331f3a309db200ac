"""One entry point for rendering 3D Gaussians: gsplat on CUDA, our rasteriser elsewhere."""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor

from .cpu import rasterize_torch
from .sh import MAX_SH_DEGREE

__all__ = ["rasterize"]

RenderMode = Literal["RGB", "RGB+ED"]
Backend = Literal["auto", "gsplat", "torch"]


def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Float[Tensor, "N K 3"] | Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    sh_degree: int | None = None,
    backgrounds: Float[Tensor, "C 3"] | None = None,
    render_mode: RenderMode = "RGB",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backend: Backend = "auto",
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"], dict]:
    """Rasterise 3D Gaussians into ``C`` pinhole cameras, like ``gsplat.rasterization``.

    Semantics are those of gsplat 1.4.0's ``rasterization`` in classic mode with
    ``packed=False`` (EWA splatting, ``eps2d`` dilation, 3-sigma radii, 16x16 tiles,
    front-to-back compositing with ``alpha = min(0.999, o exp(-sigma))``, alphas below
    ``1/255`` skipped, termination once transmittance would drop to ``1e-4``). Both
    backends are differentiable with respect to every floating-point input.

    Args:
        means: Gaussian centres in world space. [N, 3]
        quats: Gaussian rotations as wxyz quaternions; need not be normalised. [N, 4]
        scales: Gaussian standard deviations along the rotated axes (linear, not log). [N, 3]
        opacities: Gaussian opacities in [0, 1] (post-sigmoid). [N]
        colors: If ``sh_degree`` is None, post-activation colours (any channel count D,
            usually RGB) [N, D], or per camera [C, N, D]. Otherwise SH coefficients in
            gsplat's basis and layout, [N, K, 3] or [C, N, K, 3], with
            ``K >= (sh_degree + 1) ** 2``; the colour is ``max(SH(dir) + 0.5, 0)`` with
            ``dir`` the normalised ``mean - camera centre``.
        viewmats: World-to-camera transforms, OpenCV convention (x right, y down,
            z forward). [C, 4, 4]
        Ks: Pinhole intrinsics in pixels (``fx, fy, cx, cy``; skew ignored). [C, 3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        sh_degree: SH degree to evaluate (0-4), or None when ``colors`` are colours.
        backgrounds: Background colour per camera, composited as
            ``bg * (1 - alpha)``. [C, D] (D = 3 for SH). Default: none (black).
        render_mode: ``"RGB"`` renders the colours (D channels); ``"RGB+ED"`` appends
            the expected depth ``sum_i w_i z_i / alpha`` as a last channel (background 0
            for that channel).
        near_plane: Gaussians with camera depth below this are culled.
        far_plane: Gaussians with camera depth above this are culled.
        eps2d: Added to the diagonal of every 2D covariance (low-pass filter, in pixels^2).
        radius_clip: Gaussians whose 2D radius (pixels) is ``<= radius_clip`` are culled.
        backend: ``"gsplat"`` (CUDA tensors only), ``"torch"`` (the project's CPU
            rasteriser: C++ kernels compiled on first use, or pure PyTorch if that is not
            possible or ``PIXELSPLAT_NS_NATIVE=0``; same results) or ``"auto"``: gsplat
            for CUDA tensors, else torch.

    Returns:
        A tuple:

        - **render_colors**: Rendered colours, D channels (+1 for the expected depth in
          ``"RGB+ED"``). [C, H, W, D]
        - **render_alphas**: Accumulated opacity ``1 - T_final``. [C, H, W, 1]
        - **meta**: Intermediate results, gsplat style (``packed=False`` layout):
          ``radii`` (int32 pixel radius, 0 = culled) [C, N], ``means2d`` (projected
          centres; it is the tensor the rasteriser consumes, so ``retain_grad()`` on it
          yields screen-space gradients) [C, N, 2], ``depths`` (camera z) [C, N],
          ``conics`` (inverse 2D covariance, upper triangle) [C, N, 3], ``opacities``
          [C, N], plus ``width``, ``height``, ``tile_size``, ``tile_width``,
          ``tile_height``, ``n_cameras``, ``tiles_per_gauss`` [C, N] and ``backend``.
          Entries of culled Gaussians are unspecified (zero for the torch backend).
    """
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode)
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"backend must be 'auto', 'gsplat' or 'torch', got {backend!r}")
    on_cuda = means.is_cuda
    if backend == "gsplat" and not on_cuda:
        raise ValueError(
            "backend='gsplat' needs CUDA tensors (gsplat has no CPU kernels); got tensors on "
            f"{means.device}. Use backend='torch' or 'auto' for the CPU rasteriser."
        )
    use_gsplat = backend == "gsplat" or (backend == "auto" and on_cuda)
    kwargs = dict(
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode=render_mode,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        radius_clip=radius_clip,
    )
    if use_gsplat:
        from gsplat import rasterization

        render, alpha, meta = rasterization(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            packed=False,
            tile_size=16,
            rasterize_mode="classic",
            **kwargs,
        )
        meta["backend"] = "gsplat"
    else:
        render, alpha, meta = rasterize_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs
        )
        meta["backend"] = "torch"
    return render, alpha, meta


def _validate(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode
):
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    N = means.shape[0] if means.dim() == 2 else -1
    check(means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}")
    check(tuple(quats.shape) == (N, 4), f"quats must be [{N}, 4], got {tuple(quats.shape)}")
    check(tuple(scales.shape) == (N, 3), f"scales must be [{N}, 3], got {tuple(scales.shape)}")
    check(tuple(opacities.shape) == (N,), f"opacities must be [{N}], got {tuple(opacities.shape)}")
    C = viewmats.shape[0] if viewmats.dim() == 3 else -1
    check(
        viewmats.dim() == 3 and tuple(viewmats.shape[1:]) == (4, 4),
        f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}",
    )
    check(tuple(Ks.shape) == (C, 3, 3), f"Ks must be [{C}, 3, 3], got {tuple(Ks.shape)}")
    check(int(width) > 0 and int(height) > 0, f"width and height must be positive, got {width}x{height}")
    check(render_mode in ("RGB", "RGB+ED"), f"render_mode must be 'RGB' or 'RGB+ED', got {render_mode!r}")
    if sh_degree is None:
        check(
            (colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and tuple(colors.shape[:2]) == (C, N)),
            f"colors must be [N, D] or [C, N, D] when sh_degree is None, got {tuple(colors.shape)}",
        )
    else:
        check(0 <= sh_degree <= MAX_SH_DEGREE, f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {sh_degree}")
        check(
            (colors.dim() == 3 and colors.shape[0] == N and colors.shape[2] == 3)
            or (colors.dim() == 4 and tuple(colors.shape[:2]) == (C, N) and colors.shape[3] == 3),
            f"colors must be SH coefficients [N, K, 3] or [C, N, K, 3], got {tuple(colors.shape)}",
        )
        check(
            (sh_degree + 1) ** 2 <= colors.shape[-2],
            f"sh_degree {sh_degree} needs K >= {(sh_degree + 1) ** 2}, got {colors.shape[-2]}",
        )
    if backgrounds is not None:
        channels = 3 if sh_degree is not None else colors.shape[-1]
        check(
            tuple(backgrounds.shape) == (C, channels),
            f"backgrounds must be [{C}, {channels}], got {tuple(backgrounds.shape)}",
        )
    tensors = (means, quats, scales, opacities, colors, viewmats, Ks) + (
        (backgrounds,) if backgrounds is not None else ()
    )
    devices = {t.device for t in tensors}
    check(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")
    dtypes = {t.dtype for t in tensors}
    check(
        len(dtypes) == 1 and means.dtype.is_floating_point,
        f"all tensors must have one floating-point dtype, got {sorted(map(str, dtypes))}",
    )
