"""Linear layers through oneDNN on the CPU, for inference.

PyTorch sends float32 ``F.linear`` on the CPU to MKL's sgemm, which on AMD processors runs
well below the machine's peak (about 140 GFLOP/s on the 2-core EPYC we benchmark on).
oneDNN dispatches on the instruction set, not the vendor: the same product as a 1x1
convolution over a channels-last view of the tokens runs about 1.45x faster there, with no
copy in or out (the view and the result are both the [tokens, features] memory). Results
equal ``F.linear`` to float32 rounding (relative error ~1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.is_contiguous()
        and x.numel() > 0
    )


def linear(
    x: Float[Tensor, "*batch d_in"], weight: Float[Tensor, "d_out d_in"], bias: Float[Tensor, " d_out"] | None
) -> Float[Tensor, "*batch d_out"]:
    """``F.linear(x, weight, bias)``, through oneDNN for contiguous float32 inputs on the CPU."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    d_out, d_in = weight.shape
    tokens = x.numel() // d_in
    # [tokens, d_in] memory viewed as a 1 x d_in x tokens x 1 channels-last image.
    image = x.view(1, tokens, 1, d_in).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight.view(d_out, d_in, 1, 1), bias)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], d_out)


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) computed by :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
