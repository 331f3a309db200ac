"""The FFT (overlap-save) convolution used at inference equals F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelsplat_ns.encoder.inference.spectral_conv import kernel_spectrum, spectral_conv2d


@pytest.mark.parametrize(
    "shape, kernel, padding, tile",
    [
        ((1, 6, 37, 29), 7, (3, 3), 16),  # sizes that are not whole tiles
        ((2, 5, 20, 48), 7, (0, 3), 10),  # rows without padding (the banded use)
        ((1, 4, 9, 9), 3, (1, 1), 4),
        ((1, 3, 12, 17), 5, (2, 0), 26),  # one tile larger than the image
    ],
)
def test_equals_direct_convolution(shape, kernel, padding, tile):
    generator = torch.Generator().manual_seed(sum(shape) + kernel)
    x = torch.randn(shape, generator=generator)
    weight = torch.randn(8, shape[1], kernel, kernel, generator=generator)
    bias = torch.randn(8, generator=generator)
    expected = F.conv2d(x, weight, bias, padding=padding)
    got = spectral_conv2d(x, kernel_spectrum(weight, tile), bias, kernel, tile, padding)
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()) < 1e-5
    # An asymmetric kernel catches a missing flip (correlation versus convolution).
    no_bias = spectral_conv2d(x, kernel_spectrum(weight, tile), None, kernel, tile, padding)
    assert torch.allclose(no_bias + bias[None, :, None, None], got, atol=1e-5)
