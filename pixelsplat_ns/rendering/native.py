"""Optional C++/OpenMP kernels for the CPU rasteriser, compiled on first use.

``csrc/raster.cpp`` exposes a plain C ABI (no Torch headers, so it builds in a couple of
seconds); it is compiled with ``torch.utils.cpp_extension.load`` into Torch's extension
cache and called through ``ctypes`` on tensors' data pointers. If there is no compiler,
the build fails, or ``PIXELSPLAT_NS_NATIVE=0`` is set, :func:`load` returns None and the
rasteriser uses its pure-PyTorch path (same results up to float rounding).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["NativeKernels", "available", "load"]

_SOURCE = Path(__file__).with_name("csrc") / "raster.cpp"
_ABI_VERSION = 9
_lock = threading.Lock()
_state: dict = {}

_i64, _int = ctypes.c_int64, ctypes.c_int
_ptr = ctypes.c_void_p


def _p(t: Tensor) -> int:
    return t.data_ptr()


class NativeKernels:
    """ctypes bindings of ``csrc/raster.cpp`` (all tensors contiguous, on the CPU)."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        lib.psn_bin_count.argtypes = [_ptr, _i64, _ptr, _i64, _i64, _i64, _i64, _ptr]
        lib.psn_bin_fill.argtypes = [_ptr, _i64, _ptr, _i64, _i64, _i64, _i64, _ptr, _ptr]
        composite = [_ptr] * 5 + [_i64, _i64, _int] + [_ptr] * 5 + [_i64] * 6
        for name in ("psn_composite_fwd_f32", "psn_composite_fwd_f64"):
            getattr(lib, name).argtypes = composite + [_ptr] * 5 + [_int]
        for name in ("psn_composite_bwd_f32", "psn_composite_bwd_f64"):
            getattr(lib, name).argtypes = composite + [_ptr] * 10 + [_int]
        for name in ("psn_depth_order_f32", "psn_depth_order_f64"):
            getattr(lib, name).argtypes = [_ptr, _ptr, _i64, _ptr]
            getattr(lib, name).restype = _i64
        d = ctypes.c_double
        proj = [_ptr] * 5 + [_i64, _i64, _int, _int, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, d, d, d, d]
        for name in ("psn_project_fwd_f32", "psn_project_fwd_f64"):
            getattr(lib, name).argtypes = proj + [_ptr] * 8 + [_int]
        for name in ("psn_project_bwd_f32", "psn_project_bwd_f64"):
            getattr(lib, name).argtypes = proj + [_ptr] * 9 + [_int]

    @staticmethod
    def _suffix(dtype: torch.dtype) -> str:
        if dtype == torch.float32:
            return "f32"
        if dtype == torch.float64:
            return "f64"
        raise TypeError(f"native kernels support float32/float64, got {dtype}")

    def depth_order(self, depths: Tensor, sigma_cut: Tensor) -> Tensor:
        """Flat ids with ``sigma_cut > 0``, sorted by depth (stable: ties by index)."""
        depths = depths.reshape(-1).contiguous()
        out = torch.empty(depths.numel(), dtype=torch.int64)
        fn = getattr(self.lib, "psn_depth_order_" + self._suffix(depths.dtype))
        n = fn(_p(depths), _p(sigma_cut), depths.numel(), _p(out))
        return out[:n]

    def bin(self, order: Tensor, rects: Tensor, n_per_cam: int, block: int, tiles_x: int, tiles_y: int, n_tiles: int):
        """Counting-sort binning: ``(ids, start, count)`` with lists in ``order``."""
        order = order.contiguous()
        count = torch.zeros(n_tiles, dtype=torch.int64)
        self.lib.psn_bin_count(_p(order), order.numel(), _p(rects), n_per_cam, block, tiles_x, tiles_y, _p(count))
        start = torch.cumsum(count, 0) - count
        ids = torch.empty(int(count.sum()), dtype=torch.int64)
        cursor = start.clone()
        self.lib.psn_bin_fill(
            order.data_ptr(), order.numel(), _p(rects), n_per_cam, block, tiles_x, tiles_y, _p(cursor), _p(ids)
        )
        return ids, start, count

    @staticmethod
    def _composite_args(means2d, conics, opacities, colors, backgrounds, ed, bins, rects, sigma_cut, width, height):
        M, D = colors.shape
        return [
            _p(means2d),
            _p(conics),
            _p(opacities),
            _p(colors),
            None if backgrounds is None else _p(backgrounds),
            M,
            D,
            int(ed),
            _p(bins.gauss_ids),
            _p(bins.start),
            _p(bins.count),
            _p(rects),
            _p(sigma_cut),
            bins.block,
            bins.tiles_x,
            bins.tiles_y,
            width,
            height,
            bins.n_tiles,
        ]

    def composite_forward(
        self, means2d, conics, opacities, colors, backgrounds, ed, bins, rects, sigma_cut, width, height, n_threads
    ):
        """Image-layout ``(render_raw, render, alpha [C, H, W, 1], T [C, H, W], used [C, H, W])``."""
        C = bins.n_tiles // (bins.tiles_x * bins.tiles_y)
        D, dtype = colors.shape[1], colors.dtype
        raw = torch.empty(C, height, width, D, dtype=dtype)
        out = torch.empty(C, height, width, D, dtype=dtype) if ed else raw
        alpha = torch.empty(C, height, width, 1, dtype=dtype)
        T = torch.empty(C, height, width, dtype=dtype)
        used = torch.empty(C, height, width, dtype=torch.int32)
        fn = getattr(self.lib, "psn_composite_fwd_" + self._suffix(dtype))
        args = self._composite_args(
            means2d, conics, opacities, colors, backgrounds, ed, bins, rects, sigma_cut, width, height
        )
        fn(*args, _p(raw), _p(out), _p(alpha), _p(T), _p(used), n_threads)
        return raw, out, alpha, T, used

    def composite_backward(
        self,
        means2d,
        conics,
        opacities,
        colors,
        backgrounds,
        ed,
        bins,
        rects,
        sigma_cut,
        width,
        height,
        raw,
        T,
        used,
        v_render,
        v_alpha,
        n_threads,
    ):
        """``(v_means2d, v_conics, v_opacities, v_colors, v_backgrounds or None)``."""
        M, D = colors.shape
        dtype = colors.dtype
        v_means2d = torch.empty(M, 2, dtype=dtype)
        v_conics = torch.empty(M, 3, dtype=dtype)
        v_opac = torch.empty(M, dtype=dtype)
        v_colors = torch.empty(M, D, dtype=dtype)
        v_bg = torch.empty_like(backgrounds) if backgrounds is not None else None
        fn = getattr(self.lib, "psn_composite_bwd_" + self._suffix(dtype))
        args = self._composite_args(
            means2d, conics, opacities, colors, backgrounds, ed, bins, rects, sigma_cut, width, height
        )
        fn(
            *args,
            _p(raw),
            _p(T),
            _p(used),
            _p(v_render),
            _p(v_alpha),
            _p(v_means2d),
            _p(v_conics),
            _p(v_opac),
            _p(v_colors),
            None if v_bg is None else _p(v_bg),
            n_threads,
        )
        return v_means2d, v_conics, v_opac, v_colors, v_bg

    @staticmethod
    def _project_args(
        means, quats, scales, opacities, sh, sh_degree, ed, viewmats, Ks, campos, width, height, settings
    ):
        C, N = viewmats.shape[0], means.shape[0]
        if sh is None:
            sh_ptr, stride, K, degree = None, 0, 0, -1
        else:
            K = sh.shape[-2]
            sh_ptr, stride, degree = _p(sh), (N * K * 3 if sh.dim() == 4 else 0), sh_degree
        return [
            _p(means),
            _p(quats),
            _p(scales),
            _p(opacities),
            sh_ptr,
            stride,
            K,
            degree,
            int(ed),
            _p(viewmats),
            _p(Ks),
            _p(campos),
            C,
            N,
            width,
            height,
            settings["eps2d"],
            settings["near_plane"],
            settings["far_plane"],
            settings["radius_clip"],
        ]

    def project_forward(
        self,
        means,
        quats,
        scales,
        opacities,
        sh,
        sh_degree,
        ed,
        viewmats,
        Ks,
        campos,
        width,
        height,
        settings,
        n_threads,
    ):
        """Projection, SH colours (+ depth channel if ``ed``), footprints and gsplat's
        tiles_per_gauss (all inputs contiguous, one dtype)."""
        C, N, dtype = viewmats.shape[0], means.shape[0], means.dtype
        radii = torch.empty(C, N, dtype=torch.int32)
        means2d = torch.empty(C, N, 2, dtype=dtype)
        depths = torch.empty(C, N, dtype=dtype)
        conics = torch.empty(C, N, 3, dtype=dtype)
        colors = torch.empty(C, N, 4 if ed else 3, dtype=dtype) if sh is not None else None
        rects = torch.empty(C * N, 4, dtype=torch.int32)
        sigma_cut = torch.empty(C * N, dtype=dtype)
        tiles_per_gauss = torch.empty(C, N, dtype=torch.int32)
        fn = getattr(self.lib, "psn_project_fwd_" + self._suffix(dtype))
        args = self._project_args(
            means, quats, scales, opacities, sh, sh_degree, ed, viewmats, Ks, campos, width, height, settings
        )
        fn(
            *args,
            _p(radii),
            _p(means2d),
            _p(depths),
            _p(conics),
            None if colors is None else _p(colors),
            _p(rects),
            _p(sigma_cut),
            _p(tiles_per_gauss),
            n_threads,
        )
        return radii, means2d, depths, conics, colors, rects, sigma_cut, tiles_per_gauss

    def project_backward(
        self,
        means,
        quats,
        scales,
        opacities,
        sh,
        sh_degree,
        ed,
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
        v_colors,
        n_threads,
    ):
        """Gradients w.r.t. means, quats, scales and SH coefficients (None without SH);
        missing (None) output gradients count as zero."""
        v_means = torch.empty_like(means)
        v_quats = torch.empty_like(quats)
        v_scales = torch.empty_like(scales)
        v_sh = torch.empty_like(sh) if sh is not None else None  # cleared by the kernel
        fn = getattr(self.lib, "psn_project_bwd_" + self._suffix(means.dtype))
        args = self._project_args(
            means, quats, scales, opacities, sh, sh_degree, ed, viewmats, Ks, campos, width, height, settings
        )

        def ptr(t):
            return None if t is None else _p(t.contiguous())

        keep = [t.contiguous() if t is not None else None for t in (v_means2d, v_depths, v_conics, v_colors)]
        fn(
            *args,
            _p(radii),
            *(ptr(t) for t in keep),
            _p(v_means),
            _p(v_quats),
            _p(v_scales),
            None if v_sh is None else _p(v_sh),
            n_threads,
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
            return NativeKernels(lib)
        except Exception as error:  # try the next, more conservative flags
            errors.append(f"{' '.join(flags)}: {error!s:.300}")
    raise RuntimeError("; ".join(errors))


def load() -> NativeKernels | None:
    """The compiled kernels, building them on first call; None if unavailable."""
    if os.environ.get("PIXELSPLAT_NS_NATIVE", "1").lower() in ("0", "false", "no", "off"):
        return None
    with _lock:
        if "kernels" not in _state:
            try:
                _state["kernels"] = _build()
            except Exception as error:  # no compiler, build failure, ...
                warnings.warn(
                    f"pixelsplat_ns: C++ rasteriser unavailable ({error!s:.200}); using the PyTorch path", stacklevel=2
                )
                _state["kernels"] = None
        return _state["kernels"]


def available() -> bool:
    return load() is not None
