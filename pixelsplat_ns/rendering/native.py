"""Optional C++/OpenMP kernels for the CPU rasteriser, compiled on first use.

``csrc/raster.cpp`` exposes a plain C ABI without Torch headers, which keeps the one-off
build short (15-30 s on two cores); it is compiled with ``torch.utils.cpp_extension.load``
into Torch's extension cache and called through ``ctypes`` on tensors' data pointers.

Every kernel takes a pointer to one argument struct. Each struct's fields are declared once
on each side, in ``raster.cpp`` (an X-macro) and here (a :class:`ctypes.Structure`); the
library describes every kernel's struct (each field's name, kind, offset and size, the
struct's size, the result type) through ``psn_layout``, and the library is only used if
those descriptions equal the ones derived from the Structures, so the two sides cannot drift
apart silently. If there is no compiler, the build fails, the layouts disagree, or
``PIXELSPLAT_NS_NATIVE=0`` is set, :func:`load` returns None and the rasteriser uses its
pure-PyTorch path (same results up to float rounding).

Shapes: ``C`` cameras, ``N`` Gaussians, ``M = C * N`` (camera, Gaussian) pairs flattened,
``D`` colour channels (3, or 4 with the expected-depth channel), ``H x W`` images.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from .tiles import TileBins

__all__ = ["NativeKernels", "available", "load"]

_SOURCE = Path(__file__).with_name("csrc") / "raster.cpp"
_ABI_VERSION = 10  # psn_abi_version(): bumped when the C ABI changes
_lock = threading.Lock()
_state: dict = {}

_ptr, _i64, _i32, _f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double

# The argument structs, field for field as in raster.cpp (whose comments give the shapes).
# Pointers are data pointers (or None for NULL), counts int64, flags int32, settings double.


class DepthOrderArgs(ctypes.Structure):
    """``psn_depth_order_{f32,f64}``: entries with ``sigma_cut > 0`` sorted front to back."""

    _fields_ = [("depths", _ptr), ("sigma_cut", _ptr), ("n_entries", _i64), ("out", _ptr)]


class BinArgs(ctypes.Structure):
    """``psn_bin_count`` / ``psn_bin_fill``: per-tile Gaussian lists by counting sort."""

    _fields_ = [
        ("order", _ptr),
        ("n_order", _i64),
        ("rects", _ptr),
        ("n_per_cam", _i64),
        ("block", _i64),
        ("tiles_x", _i64),
        ("tiles_y", _i64),
        ("count", _ptr),
        ("cursor", _ptr),
        ("gauss_ids", _ptr),
    ]


class CompositeArgs(ctypes.Structure):
    """``psn_composite_{fwd,bwd}_{f32,f64}``: front-to-back compositing and its gradients."""

    _fields_ = [
        ("means2d", _ptr),
        ("conics", _ptr),
        ("opacities", _ptr),
        ("colors", _ptr),
        ("backgrounds", _ptr),
        ("n_gaussians", _i64),
        ("n_channels", _i64),
        ("expected_depth", _i32),
        ("gauss_ids", _ptr),
        ("start", _ptr),
        ("count", _ptr),
        ("rects", _ptr),
        ("sigma_cut", _ptr),
        ("block", _i64),
        ("tiles_x", _i64),
        ("tiles_y", _i64),
        ("width", _i64),
        ("height", _i64),
        ("n_tiles", _i64),
        # written by the forward; render_raw, transmittance and used are read by the backward
        ("render_raw", _ptr),
        ("render", _ptr),
        ("alpha", _ptr),
        ("transmittance", _ptr),
        ("used", _ptr),
        # backward only
        ("v_render", _ptr),
        ("v_alpha", _ptr),
        ("v_means2d", _ptr),
        ("v_conics", _ptr),
        ("v_opacities", _ptr),
        ("v_colors", _ptr),
        ("v_backgrounds", _ptr),
        ("n_threads", _i32),
    ]


class ProjectArgs(ctypes.Structure):
    """``psn_project_{fwd,bwd}_{f32,f64}``: projection, SH colours, footprints and gradients."""

    _fields_ = [
        ("means", _ptr),
        ("quats", _ptr),
        ("scales", _ptr),
        ("opacities", _ptr),
        ("sh", _ptr),
        ("viewmats", _ptr),
        ("Ks", _ptr),
        ("campos", _ptr),
        ("sh_cam_stride", _i64),
        ("n_sh_coeffs", _i64),
        ("sh_degree", _i32),
        ("expected_depth", _i32),
        ("n_cameras", _i64),
        ("n_gaussians", _i64),
        ("width", _i64),
        ("height", _i64),
        ("eps2d", _f64),
        ("near_plane", _f64),
        ("far_plane", _f64),
        ("radius_clip", _f64),
        # written by the forward; radii is read by the backward
        ("radii", _ptr),
        ("means2d", _ptr),
        ("depths", _ptr),
        ("conics", _ptr),
        ("colors", _ptr),
        ("rects", _ptr),
        ("sigma_cut", _ptr),
        ("tiles_per_gauss", _ptr),
        # backward only
        ("v_means2d", _ptr),
        ("v_depths", _ptr),
        ("v_conics", _ptr),
        ("v_colors", _ptr),
        ("v_means", _ptr),
        ("v_quats", _ptr),
        ("v_scales", _ptr),
        ("v_sh", _ptr),
        ("n_threads", _i32),
    ]


# Exported kernel -> (its argument struct, its result type or None for void).
_KERNELS: dict[str, tuple[type[ctypes.Structure], type | None]] = {
    "psn_depth_order_f32": (DepthOrderArgs, _i64),
    "psn_depth_order_f64": (DepthOrderArgs, _i64),
    "psn_bin_count": (BinArgs, None),
    "psn_bin_fill": (BinArgs, None),
    **{f"psn_composite_{d}_{s}": (CompositeArgs, None) for d in ("fwd", "bwd") for s in ("f32", "f64")},
    **{f"psn_project_{d}_{s}": (ProjectArgs, None) for d in ("fwd", "bwd") for s in ("f32", "f64")},
}
_KINDS = {_ptr: "p", _i64: "i", _i32: "i", _f64: "f"}  # as describe_field in raster.cpp


class LayoutMismatch(RuntimeError):
    """The library's argument structs are not the ones declared here."""


def describe_layout(struct: type[ctypes.Structure], restype: type | None) -> str:
    """What ``psn_layout`` reports for a kernel taking ``struct`` and returning ``restype``."""
    fields = "".join(
        f"{name} {_KINDS[ctype]} {getattr(struct, name).offset} {getattr(struct, name).size};"
        for name, ctype in struct._fields_
    )
    result = "returns void;" if restype is None else f"returns {_KINDS[restype]} 0 {ctypes.sizeof(restype)};"
    return f"{fields}sizeof {ctypes.sizeof(struct)};{result}"


def library_layout(lib: ctypes.CDLL, kernel: str) -> str | None:
    """The library's own description of ``kernel``'s arguments (None if it has none)."""
    layout = lib.psn_layout
    # the one signature that cannot be checked: it is the checker
    layout.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64]
    layout.restype = ctypes.c_int64
    buffer = ctypes.create_string_buffer(4096)
    length = layout(kernel.encode(), buffer, len(buffer))
    if length >= len(buffer):
        buffer = ctypes.create_string_buffer(length + 1)
        length = layout(kernel.encode(), buffer, len(buffer))
    return buffer.value.decode() if length >= 0 else None


def check_layouts(lib: ctypes.CDLL, kernels: dict | None = None) -> None:
    """Raise :class:`LayoutMismatch` unless every kernel's argument struct and result type in
    the library match the ctypes declarations (``kernels`` defaults to all of them)."""
    for name, (struct, restype) in (_KERNELS if kernels is None else kernels).items():
        theirs, ours = library_layout(lib, name), describe_layout(struct, restype)
        if theirs is None:
            raise LayoutMismatch(f"{name}: the library does not describe it")
        if theirs != ours:
            c_fields, py_fields = theirs.split(";"), ours.split(";")
            i = next(i for i, (a, b) in enumerate(zip(c_fields, py_fields, strict=False)) if a != b)
            raise LayoutMismatch(
                f"{name}: {struct.__name__} differs from raster.cpp's at entry {i}: "
                f"C++ {c_fields[i]!r}, Python {py_fields[i]!r}"
            )


def _pack(struct: type[ctypes.Structure], values: dict[str, object]) -> ctypes.Structure:
    """``struct`` with every field given by ``values`` (tensors as data pointers, None as NULL).

    All fields must be named, so a field added on both sides but forgotten at a call fails
    here instead of reaching the kernel as NULL.
    """
    names = _field_names(struct)
    if values.keys() != names.keys():
        missing, unknown = sorted(names.keys() - values.keys()), sorted(values.keys() - names.keys())
        raise TypeError(f"{struct.__name__}: missing fields {missing}, unknown fields {unknown}")
    # positional: a few microseconds less per call than keywords
    return struct(*[v.data_ptr() if isinstance(v, Tensor) else v for v in map(values.__getitem__, names)])


@functools.cache
def _field_names(struct: type[ctypes.Structure]) -> dict[str, None]:
    """The struct's field names in order (a dict, for fast key-set comparisons)."""
    return dict.fromkeys(name for name, _ in struct._fields_)


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise TypeError(f"native kernels support float32/float64, got {dtype}")


class NativeKernels:
    """ctypes bindings of ``csrc/raster.cpp`` (all tensors contiguous, on the CPU).

    Building one checks the library's argument layouts (:class:`LayoutMismatch`).
    """

    def __init__(self, lib: ctypes.CDLL):
        check_layouts(lib)
        self.lib = lib
        self._kernels = {}  # name -> (argument struct, function)
        for name, (struct, restype) in _KERNELS.items():
            function = getattr(lib, name)
            function.argtypes = [ctypes.POINTER(struct)]
            function.restype = restype
            self._kernels[name] = (struct, function)

    def _call(self, name: str, **values: object) -> int | None:
        """Run kernel ``name`` on an argument struct holding ``values``; the caller keeps the
        tensors alive until it returns."""
        struct, function = self._kernels[name]
        return function(ctypes.byref(_pack(struct, values)))

    def depth_order(self, depths: Float[Tensor, "C N"], sigma_cut: Float[Tensor, " M"]) -> Int[Tensor, " V"]:
        """Flat ids with ``sigma_cut > 0``, sorted by depth (stable: ties by index)."""
        depths = depths.reshape(-1).contiguous()
        out = torch.empty(depths.numel(), dtype=torch.int64)
        n_sorted = self._call(
            "psn_depth_order_" + _suffix(depths.dtype),
            depths=depths,
            sigma_cut=sigma_cut,
            n_entries=depths.numel(),
            out=out,
        )
        return out[:n_sorted]

    def bin(
        self,
        order: Int[Tensor, " V"],
        rects: Int[Tensor, "M 4"],
        n_per_cam: int,
        block: int,
        tiles_x: int,
        tiles_y: int,
        n_tiles: int,
    ) -> tuple[Int[Tensor, " n_isects"], Int[Tensor, " n_tiles"], Int[Tensor, " n_tiles"]]:
        """Counting-sort binning: ``(ids, start, count)`` with lists in ``order``."""
        order = order.contiguous()
        count = torch.zeros(n_tiles, dtype=torch.int64)
        grid = dict(
            order=order,
            n_order=order.numel(),
            rects=rects,
            n_per_cam=n_per_cam,
            block=block,
            tiles_x=tiles_x,
            tiles_y=tiles_y,
        )
        self._call("psn_bin_count", **grid, count=count, cursor=None, gauss_ids=None)
        start = torch.cumsum(count, 0) - count
        ids = torch.empty(int(count.sum()), dtype=torch.int64)
        cursor = start.clone()
        self._call("psn_bin_fill", **grid, count=None, cursor=cursor, gauss_ids=ids)
        return ids, start, count

    @staticmethod
    def _composite_inputs(
        means2d: Float[Tensor, "M 2"],
        conics: Float[Tensor, "M 3"],
        opacities: Float[Tensor, " M"],
        colors: Float[Tensor, "M D"],
        backgrounds: Float[Tensor, "C D"] | None,
        expected_depth: bool,
        bins: TileBins,
        rects: Int[Tensor, "M 4"],
        sigma_cut: Float[Tensor, " M"],
        width: int,
        height: int,
        n_threads: int,
    ) -> dict[str, object]:
        """The fields of :class:`CompositeArgs` that forward and backward share."""
        n_gaussians, n_channels = colors.shape
        return dict(
            means2d=means2d,
            conics=conics,
            opacities=opacities,
            colors=colors,
            backgrounds=backgrounds,
            n_gaussians=n_gaussians,
            n_channels=n_channels,
            expected_depth=int(expected_depth),
            gauss_ids=bins.gauss_ids,
            start=bins.start,
            count=bins.count,
            rects=rects,
            sigma_cut=sigma_cut,
            block=bins.block,
            tiles_x=bins.tiles_x,
            tiles_y=bins.tiles_y,
            width=width,
            height=height,
            n_tiles=bins.n_tiles,
            n_threads=n_threads,
        )

    def composite_forward(
        self,
        means2d: Float[Tensor, "M 2"],
        conics: Float[Tensor, "M 3"],
        opacities: Float[Tensor, " M"],
        colors: Float[Tensor, "M D"],
        backgrounds: Float[Tensor, "C D"] | None,
        expected_depth: bool,
        bins: TileBins,
        rects: Int[Tensor, "M 4"],
        sigma_cut: Float[Tensor, " M"],
        width: int,
        height: int,
        n_threads: int,
    ) -> tuple[
        Float[Tensor, "C H W D"],
        Float[Tensor, "C H W D"],
        Float[Tensor, "C H W 1"],
        Float[Tensor, "C H W"],
        Int[Tensor, "C H W"],
    ]:
        """Image-layout ``(render_raw, render, alpha, transmittance, used)``: ``render`` has the
        expected-depth channel divided by alpha (``render_raw`` itself without it), ``used``
        the list entries each pixel consumed."""
        n_cameras = bins.n_tiles // (bins.tiles_x * bins.tiles_y)
        n_channels, dtype = colors.shape[1], colors.dtype
        raw = torch.empty(n_cameras, height, width, n_channels, dtype=dtype)
        out = torch.empty(n_cameras, height, width, n_channels, dtype=dtype) if expected_depth else raw
        alpha = torch.empty(n_cameras, height, width, 1, dtype=dtype)
        transmittance = torch.empty(n_cameras, height, width, dtype=dtype)
        used = torch.empty(n_cameras, height, width, dtype=torch.int32)
        inputs = self._composite_inputs(
            means2d,
            conics,
            opacities,
            colors,
            backgrounds,
            expected_depth,
            bins,
            rects,
            sigma_cut,
            width,
            height,
            n_threads,
        )
        self._call(
            "psn_composite_fwd_" + _suffix(dtype),
            **inputs,
            render_raw=raw,
            render=out,
            alpha=alpha,
            transmittance=transmittance,
            used=used,
            v_render=None,
            v_alpha=None,
            v_means2d=None,
            v_conics=None,
            v_opacities=None,
            v_colors=None,
            v_backgrounds=None,
        )
        return raw, out, alpha, transmittance, used

    def composite_backward(
        self,
        means2d: Float[Tensor, "M 2"],
        conics: Float[Tensor, "M 3"],
        opacities: Float[Tensor, " M"],
        colors: Float[Tensor, "M D"],
        backgrounds: Float[Tensor, "C D"] | None,
        expected_depth: bool,
        bins: TileBins,
        rects: Int[Tensor, "M 4"],
        sigma_cut: Float[Tensor, " M"],
        width: int,
        height: int,
        raw: Float[Tensor, "C H W D"],
        transmittance: Float[Tensor, "C H W"],
        used: Int[Tensor, "C H W"],
        v_render: Float[Tensor, "C H W D"],
        v_alpha: Float[Tensor, "C H W 1"],
        n_threads: int,
    ) -> tuple[
        Float[Tensor, "M 2"],
        Float[Tensor, "M 3"],
        Float[Tensor, " M"],
        Float[Tensor, "M D"],
        Float[Tensor, "C D"] | None,
    ]:
        """``(v_means2d, v_conics, v_opacities, v_colors, v_backgrounds or None)`` from the
        forward's ``raw``, ``transmittance`` and ``used`` and the outputs' gradients."""
        n_gaussians, n_channels = colors.shape
        dtype = colors.dtype
        v_means2d = torch.empty(n_gaussians, 2, dtype=dtype)
        v_conics = torch.empty(n_gaussians, 3, dtype=dtype)
        v_opacities = torch.empty(n_gaussians, dtype=dtype)
        v_colors = torch.empty(n_gaussians, n_channels, dtype=dtype)
        v_backgrounds = torch.empty_like(backgrounds) if backgrounds is not None else None
        inputs = self._composite_inputs(
            means2d,
            conics,
            opacities,
            colors,
            backgrounds,
            expected_depth,
            bins,
            rects,
            sigma_cut,
            width,
            height,
            n_threads,
        )
        self._call(
            "psn_composite_bwd_" + _suffix(dtype),
            **inputs,
            render_raw=raw,
            render=None,
            alpha=None,
            transmittance=transmittance,
            used=used,
            v_render=v_render,
            v_alpha=v_alpha,
            v_means2d=v_means2d,
            v_conics=v_conics,
            v_opacities=v_opacities,
            v_colors=v_colors,
            v_backgrounds=v_backgrounds,
        )
        return v_means2d, v_conics, v_opacities, v_colors, v_backgrounds

    @staticmethod
    def _project_inputs(
        means: Float[Tensor, "N 3"],
        quats: Float[Tensor, "N 4"],
        scales: Float[Tensor, "N 3"],
        opacities: Float[Tensor, " N"],
        sh: Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"] | None,
        sh_degree: int | None,
        expected_depth: bool,
        viewmats: Float[Tensor, "C 4 4"],
        Ks: Float[Tensor, "C 3 3"],
        campos: Float[Tensor, "C 3"],
        width: int,
        height: int,
        settings: dict[str, float],
        n_threads: int,
    ) -> dict[str, object]:
        """The fields of :class:`ProjectArgs` that forward and backward share (``K`` SH
        coefficients per channel; per-camera coefficients step by ``N K 3`` per camera)."""
        n_cameras, n_gaussians = viewmats.shape[0], means.shape[0]
        if sh is None:
            sh_cam_stride, n_sh_coeffs, degree = 0, 0, -1
        else:
            n_sh_coeffs = sh.shape[-2]
            sh_cam_stride = n_gaussians * n_sh_coeffs * 3 if sh.dim() == 4 else 0
            degree = sh_degree
        return dict(
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            sh=sh,
            viewmats=viewmats,
            Ks=Ks,
            campos=campos,
            sh_cam_stride=sh_cam_stride,
            n_sh_coeffs=n_sh_coeffs,
            sh_degree=degree,
            expected_depth=int(expected_depth),
            n_cameras=n_cameras,
            n_gaussians=n_gaussians,
            width=width,
            height=height,
            eps2d=settings["eps2d"],
            near_plane=settings["near_plane"],
            far_plane=settings["far_plane"],
            radius_clip=settings["radius_clip"],
            n_threads=n_threads,
        )

    def project_forward(
        self,
        means: Float[Tensor, "N 3"],
        quats: Float[Tensor, "N 4"],
        scales: Float[Tensor, "N 3"],
        opacities: Float[Tensor, " N"],
        sh: Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"] | None,
        sh_degree: int | None,
        expected_depth: bool,
        viewmats: Float[Tensor, "C 4 4"],
        Ks: Float[Tensor, "C 3 3"],
        campos: Float[Tensor, "C 3"],
        width: int,
        height: int,
        settings: dict[str, float],
        n_threads: int,
    ) -> tuple[
        Int[Tensor, "C N"],
        Float[Tensor, "C N 2"],
        Float[Tensor, "C N"],
        Float[Tensor, "C N 3"],
        Float[Tensor, "C N D"] | None,
        Int[Tensor, "M 4"],
        Float[Tensor, " M"],
        Int[Tensor, "C N"],
    ]:
        """Projection, SH colours (+ depth channel if ``expected_depth``; None without ``sh``),
        footprints and gsplat's tiles_per_gauss (all inputs contiguous, one dtype):
        ``(radii, means2d, depths, conics, colors, rects, sigma_cut, tiles_per_gauss)``."""
        n_cameras, n_gaussians, dtype = viewmats.shape[0], means.shape[0], means.dtype
        shape = (n_cameras, n_gaussians)
        radii = torch.empty(shape, dtype=torch.int32)
        means2d = torch.empty(*shape, 2, dtype=dtype)
        depths = torch.empty(shape, dtype=dtype)
        conics = torch.empty(*shape, 3, dtype=dtype)
        colors = torch.empty(*shape, 4 if expected_depth else 3, dtype=dtype) if sh is not None else None
        rects = torch.empty(n_cameras * n_gaussians, 4, dtype=torch.int32)
        sigma_cut = torch.empty(n_cameras * n_gaussians, dtype=dtype)
        tiles_per_gauss = torch.empty(shape, dtype=torch.int32)
        inputs = self._project_inputs(
            means, quats, scales, opacities, sh, sh_degree, expected_depth, viewmats, Ks, campos, width, height,
            settings, n_threads,
        )  # fmt: skip
        self._call(
            "psn_project_fwd_" + _suffix(dtype),
            **inputs,
            radii=radii,
            means2d=means2d,
            depths=depths,
            conics=conics,
            colors=colors,
            rects=rects,
            sigma_cut=sigma_cut,
            tiles_per_gauss=tiles_per_gauss,
            v_means2d=None,
            v_depths=None,
            v_conics=None,
            v_colors=None,
            v_means=None,
            v_quats=None,
            v_scales=None,
            v_sh=None,
        )
        return radii, means2d, depths, conics, colors, rects, sigma_cut, tiles_per_gauss

    def project_backward(
        self,
        means: Float[Tensor, "N 3"],
        quats: Float[Tensor, "N 4"],
        scales: Float[Tensor, "N 3"],
        opacities: Float[Tensor, " N"],
        sh: Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"] | None,
        sh_degree: int | None,
        expected_depth: bool,
        viewmats: Float[Tensor, "C 4 4"],
        Ks: Float[Tensor, "C 3 3"],
        campos: Float[Tensor, "C 3"],
        width: int,
        height: int,
        settings: dict[str, float],
        radii: Int[Tensor, "C N"],
        v_means2d: Float[Tensor, "C N 2"] | None,
        v_depths: Float[Tensor, "C N"] | None,
        v_conics: Float[Tensor, "C N 3"] | None,
        v_colors: Float[Tensor, "C N D"] | None,
        n_threads: int,
    ) -> tuple[
        Float[Tensor, "N 3"],
        Float[Tensor, "N 4"],
        Float[Tensor, "N 3"],
        Float[Tensor, "N K 3"] | Float[Tensor, "C N K 3"] | None,
    ]:
        """Gradients w.r.t. means, quats, scales and SH coefficients (None without SH);
        missing (None) output gradients count as zero."""
        v_means = torch.empty_like(means)
        v_quats = torch.empty_like(quats)
        v_scales = torch.empty_like(scales)
        v_sh = torch.empty_like(sh) if sh is not None else None  # cleared by the kernel
        inputs = self._project_inputs(
            means, quats, scales, opacities, sh, sh_degree, expected_depth, viewmats, Ks, campos, width, height,
            settings, n_threads,
        )  # fmt: skip
        # contiguous copies, kept alive until the kernel returns
        v_means2d, v_depths, v_conics, v_colors = (
            None if t is None else t.contiguous() for t in (v_means2d, v_depths, v_conics, v_colors)
        )
        self._call(
            "psn_project_bwd_" + _suffix(means.dtype),
            **inputs,
            radii=radii,
            means2d=None,
            depths=None,
            conics=None,
            colors=None,
            rects=None,
            sigma_cut=None,
            tiles_per_gauss=None,
            v_means2d=v_means2d,
            v_depths=v_depths,
            v_conics=v_conics,
            v_colors=v_colors,
            v_means=v_means,
            v_quats=v_quats,
            v_scales=v_scales,
            v_sh=v_sh,
        )
        return v_means, v_quats, v_scales, v_sh


def _cpu_signature() -> str:
    """Identifies the instruction set the build is specialised for (-march=native)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# Compiler flags, best first. No fast-math, and -ffp-contract=off, so forward and backward
# compute bit-identical alphas; -march=native builds are keyed by the CPU's flags.
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"],
    ["-O3", "-fopenmp", "-ffp-contract=off"],
    ["-O3", "-ffp-contract=off"],  # no OpenMP: single-threaded kernels
)


def _build() -> NativeKernels:
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns about CUDA_HOME on import; we build C++ only
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)

    source = _SOURCE.read_bytes()
    errors = []
    for flags in _FLAG_SETS:
        key = source + torch.__version__.encode() + " ".join(flags).encode()
        if "-march=native" in flags:
            key += _cpu_signature().encode()
        name = f"pixelsplat_ns_raster_{hashlib.sha1(key).hexdigest()[:12]}"
        build_dir = Path(cpp_extension.get_default_build_root()) / name
        library = build_dir / f"{name}.so"
        try:
            if not library.exists():
                build_dir.mkdir(parents=True, exist_ok=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cpp_extension.load(
                        name=name,
                        sources=[str(_SOURCE)],
                        extra_cflags=flags,
                        extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [],
                        build_directory=str(build_dir),
                        is_python_module=False,
                        with_cuda=False,
                        verbose=False,
                    )
            lib = ctypes.CDLL(str(library))
            if lib.psn_abi_version() != _ABI_VERSION:
                raise RuntimeError("stale native rasteriser build")
        except Exception as error:  # try the next, more conservative flags
            errors.append(f"{' '.join(flags)}: {error!s:.300}")
            continue
        # LayoutMismatch is raised here: other flags would not change the structs
        return NativeKernels(lib)
    raise RuntimeError("; ".join(errors))


def load() -> NativeKernels | None:
    """The compiled kernels, building them on first call; None if unavailable."""
    if os.environ.get("PIXELSPLAT_NS_NATIVE", "1").lower() in ("0", "false", "no", "off"):
        return None
    with _lock:
        if "kernels" not in _state:
            try:
                _state["kernels"] = _build()
            except Exception as error:  # no compiler, build failure, layout mismatch, ...
                warnings.warn(
                    f"pixelsplat_ns: C++ rasteriser unavailable ({error!s:.200}); using the PyTorch path", stacklevel=2
                )
                _state["kernels"] = None
        return _state["kernels"]


def available() -> bool:
    return load() is not None
