"""The ctypes binding of the C++ rasteriser kernels cannot drift from ``csrc/raster.cpp``.

Every kernel takes one argument struct; ``native.load`` compares the library's description
of each struct (field names, kinds, offsets, sizes, the struct's size, the result type) with
the ctypes Structures and refuses the library on any difference. Native and PyTorch paths
agreeing is tested in ``test_rendering.py``.
"""

from __future__ import annotations

import ctypes
import re

import pytest
import torch

from pixelsplat_ns.rendering import native, rasterize
from pixelsplat_ns.rendering.cpu import rasterize_torch
from tests.conftest import require_native


@pytest.fixture
def kernels():
    require_native()
    return native.load()


def test_every_kernel_layout_matches_the_library(kernels):
    for name, (struct, restype) in native._KERNELS.items():
        theirs = native.library_layout(kernels.lib, name)
        assert theirs == native.describe_layout(struct, restype), name
        # one entry per field, then the struct's size and the result
        assert len(theirs.rstrip(";").split(";")) == len(struct._fields_) + 2
    native.check_layouts(kernels.lib)
    assert native.library_layout(kernels.lib, "psn_no_such_kernel") is None


def test_every_exported_kernel_is_bound():
    """A kernel added to raster.cpp's C ABI needs its entry (and struct) in native.py."""
    source = native._SOURCE.read_text()
    block = source[source.index('extern "C" {') :]
    exported = set(re.findall(r"^\w+ (psn_\w+)\(", block, flags=re.MULTILINE))
    assert exported - {"psn_abi_version", "psn_layout"} == set(native._KERNELS)


def _fields(struct):
    return list(struct._fields_)


def _drop_last(fields):
    return fields[:-1]


def _swap_first_two(fields):  # same offsets and sizes, different names
    return [fields[1], fields[0], *fields[2:]]


def _narrow_second(fields):  # n_order: int64 -> int32
    return [fields[0], (fields[1][0], ctypes.c_int32), *fields[2:]]


def _rename_first(fields):
    return [("not_" + fields[0][0], fields[0][1]), *fields[1:]]


@pytest.mark.parametrize("mutate", [_drop_last, _swap_first_two, _narrow_second, _rename_first])
def test_a_mismatched_struct_is_refused(kernels, mutate):
    broken = type("BrokenBinArgs", (ctypes.Structure,), {"_fields_": mutate(_fields(native.BinArgs))})
    with pytest.raises(native.LayoutMismatch, match="psn_bin_fill"):
        native.check_layouts(kernels.lib, {"psn_bin_fill": (broken, None)})


def test_a_mismatched_result_type_is_refused(kernels):
    with pytest.raises(native.LayoutMismatch, match="returns"):
        native.check_layouts(kernels.lib, {"psn_depth_order_f32": (native.DepthOrderArgs, None)})


def test_load_refuses_a_mismatched_library_and_falls_back(kernels, monkeypatch):
    """A layout mismatch is handled as a failed build: one warning, then the PyTorch path."""
    broken = type("BrokenBinArgs", (ctypes.Structure,), {"_fields_": _fields(native.BinArgs)[:-1]})
    monkeypatch.setitem(native._KERNELS, "psn_bin_fill", (broken, None))
    monkeypatch.setattr(native, "_state", {})
    with pytest.warns(UserWarning, match=r"C\+\+ rasteriser unavailable \(psn_bin_fill: BrokenBinArgs differs"):
        assert native.load() is None
    assert not native.available()  # decided once: no second warning, no second attempt
    scene = dict(
        means=torch.tensor([[0.0, 0.0, 3.0]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.full((1, 3), 0.2),
        opacities=torch.ones(1),
        colors=torch.ones(1, 3),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]),
        width=16,
        height=16,
    )
    render, alpha, _ = rasterize(**scene)
    torch_render, torch_alpha, _ = rasterize_torch(**scene, native=False)
    assert float(alpha.max()) > 0.5
    assert torch.equal(render, torch_render) and torch.equal(alpha, torch_alpha)


def test_every_field_must_be_given():
    with pytest.raises(TypeError, match=r"missing fields \['out'\]"):
        native._pack(native.DepthOrderArgs, {"depths": None, "sigma_cut": None, "n_entries": 0})
    with pytest.raises(TypeError, match=r"unknown fields \['extra'\]"):
        native._pack(
            native.DepthOrderArgs, {"depths": None, "sigma_cut": None, "n_entries": 0, "out": None, "extra": 1}
        )
