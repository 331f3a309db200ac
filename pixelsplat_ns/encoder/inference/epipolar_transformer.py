"""The epipolar transformer at inference: the same function as the network's
``EpipolarTransformer``, scheduled for memory and CPU speed.

* downscaling runs one image at a time (the convolution's reordered copy of its input stays small);
* upscaling (transposed conv, then 7x7 conv + GELU + 7x7 conv, plus the skip) is made in
  bands of full-resolution rows (``upscale_rows``), so the full-resolution map need never
  exist: the first 7x7 conv runs as one 3x3 conv on the low-resolution map
  (``phase_kernel``), the second through the FFT on the CPU (``spectral_conv``).

The fused weights are derived from the network's weights when the encoder is prepared, and
again after ``load_state_dict`` or a move / cast (``to``, ``double``...): prepare an encoder
once its weights are final.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from ..epipolar_transformer import EpipolarTransformer
from .spectral_conv import kernel_spectrum, spectral_conv2d

SPECTRAL_TILE = (
    16  # output rows/columns per FFT tile: 22 x 22 transforms, a 69 MB spectrum (26: ~0.15 s faster, +74 MB peak)
)
UPSCALE_BAND = 8  # low-resolution rows per band of ``upscale``


def _phase_kernel(
    up_weight: Float[Tensor, "c_in c_mid r r"],
    up_bias: Float[Tensor, " c_mid"],
    conv_weight: Float[Tensor, "c_out c_mid k k"],
) -> Float[Tensor, "c_out_r2 c_in_plus_1 3 3"]:
    """Weights of one 3x3 convolution on the low-resolution map equal to
    conv(k x k, pad k//2) after a stride-r, kernel-r transposed conv (upsampling by r).

    Output channel (o, a, b) is output pixel (r i + a, r j + b); the extra input channel
    is 1 inside the image and carries the transposed conv's bias (zero padding outside
    is then exact). Requires k // 2 <= r.
    """
    c_in, c_mid, r, _ = up_weight.shape
    c_out, _, k, _ = conv_weight.shape
    half = k // 2
    up = torch.cat((up_weight, up_bias[None, :, None, None].expand(1, c_mid, r, r)), dim=0)  # (c_in + 1) m r r
    kernel = conv_weight.new_zeros((c_out, r, r, c_in + 1, 3, 3))
    offsets = torch.arange(k, device=conv_weight.device)
    for phase_y in range(r):
        shift_y = phase_y + offsets - half  # input row offset (in upsampled pixels) of each tap
        cell_y, sub_y = torch.div(shift_y, r, rounding_mode="floor"), shift_y % r
        for phase_x in range(r):
            shift_x = phase_x + offsets - half
            cell_x, sub_x = torch.div(shift_x, r, rounding_mode="floor"), shift_x % r
            selected = up[:, :, sub_y][:, :, :, sub_x]  # (c_in+1) m k k: sub-pixel each tap reads
            taps = torch.einsum("omuv,cmuv->ocuv", conv_weight, selected)
            select_y = F.one_hot(cell_y + 1, 3).to(taps.dtype)  # k 3
            select_x = F.one_hot(cell_x + 1, 3).to(taps.dtype)
            kernel[:, phase_y, phase_x] = torch.einsum("ocuv,ud,ve->ocde", taps, select_y, select_x)
    return rearrange(kernel, "o a b c d e -> (o a b) c d e")


class InferenceEpipolarTransformer(EpipolarTransformer):
    """``EpipolarTransformer`` with the inference schedule (module docstring). Same
    parameters and state-dict keys; ``phase_kernel`` and ``refinement_spectrum`` are
    derived from them (not saved)."""

    phase_kernel: Tensor | None
    """The upscaler and the first refinement conv as one 3x3 conv (``_phase_kernel``),
    channels-last; None where the upscaling cannot be fused."""
    refinement_spectrum: Tensor | None
    """The last refinement conv's kernel spectrum (``kernel_spectrum``); on the CPU only."""

    @property
    def fusable(self) -> bool:
        """Whether upscaling can run as ``upscale_rows``: a downscaling transformer whose
        refinement kernel reaches at most one low-resolution cell (k // 2 <= r)."""
        return self.cfg.downscale > 1 and self.upscale_refinement[0].kernel_size[0] // 2 <= self.cfg.downscale

    def derive_weights(self) -> None:
        """(Re)compute the fused weights from the current parameters."""
        self.phase_kernel = self.refinement_spectrum = None
        if not self.fusable:
            return
        with torch.no_grad():
            conv1, conv2 = self.upscale_refinement[0], self.upscale_refinement[2]
            kernel = _phase_kernel(self.upscaler.weight, self.upscaler.bias, conv1.weight)
            self.phase_kernel = kernel.contiguous(memory_format=torch.channels_last)
            if conv2.weight.device.type == "cpu":  # cuDNN picks its own algorithm
                self.refinement_spectrum = kernel_spectrum(conv2.weight, SPECTRAL_TILE)

    def _apply(self, fn, recurse: bool = True):
        # Moves and casts (to, double, cuda ...) replace the parameters: derive again.
        super()._apply(fn, recurse)
        self.derive_weights()
        return self

    def downscale(self, images: Float[Tensor, "n channel height width"]) -> Float[Tensor, "n channel h_low w_low"]:
        """The network's downscaling, one image at a time."""
        if self.cfg.downscale <= 1:
            return images
        return torch.cat([self.downscaler(image[None]) for image in images])

    def upscale(self, x: Float[Tensor, "n c hd wd"]) -> Float[Tensor, "n c h w"]:
        """The network's upscaling, made band by band with ``upscale_rows``."""
        if not self.fusable:
            return super().upscale(x)
        n, c, hd, wd = x.shape
        r = self.cfg.downscale
        out = x.new_empty((n, c, hd * r, wd * r))
        for i in range(n):
            for top in range(0, hd, UPSCALE_BAND):
                bottom = min(top + UPSCALE_BAND, hd)
                out[i : i + 1, :, top * r : bottom * r] = self.upscale_rows(x[i : i + 1], top, bottom)
        return out

    def upscale_rows(self, x: Float[Tensor, "1 c hd wd"], top: int, bottom: int) -> Float[Tensor, "1 c rows w"]:
        """Full-resolution rows [top * r, bottom * r) of ``upscale(x)``.

        Cheaper than the plain modules: the refinement's first 7x7 conv runs as a 3x3 conv
        on the low-resolution map (see ``_phase_kernel``), and only the rows asked for (plus
        a 3-row halo) ever exist at full resolution."""
        if not self.fusable:
            r = max(self.cfg.downscale, 1)
            return super().upscale(x)[:, :, top * r : bottom * r]
        r = self.cfg.downscale
        conv1, conv2 = self.upscale_refinement[0], self.upscale_refinement[2]
        hd = x.shape[2]
        half = conv2.kernel_size[0] // 2
        # Low-res rows top-1 .. bottom (one halo row each side); their 3x3 phase conv reads
        # rows top-2 .. bottom+1, zero (including the ones channel) outside the image.
        first, last = top - 2, bottom + 2
        rows = x[:, :, max(first, 0) : min(last, hd)]
        rows = torch.cat((rows, torch.ones_like(rows[:, :1])), dim=1)
        rows = F.pad(rows, (0, 0, max(first, 0) - first, last - min(last, hd)))
        # Channels-last: oneDNN's native layout, so its 4096-channel output needs no reorder.
        rows = rows.contiguous(memory_format=torch.channels_last)
        hidden = F.pixel_shuffle(F.conv2d(rows, self.phase_kernel, padding=(0, 1)), r)  # rows (top-1)r .. (bottom+1)r
        if top == 0:
            hidden[:, :, :r] = -conv1.bias[None, :, None, None]  # outside the image: conv2's
        if bottom == hd:  # zero padding (the bias is added next; GELU(0) = 0)
            hidden[:, :, -r:] = -conv1.bias[None, :, None, None]
        hidden = hidden[:, :, r - half : hidden.shape[2] - (r - half)].contiguous()  # the halo conv2 needs
        hidden += conv1.bias[None, :, None, None]
        torch.ops.aten.gelu_(hidden)
        if self.refinement_spectrum is not None:  # the full-resolution 7x7 conv dominates CPU inference: FFT it
            refined = spectral_conv2d(
                hidden, self.refinement_spectrum, conv2.bias, conv2.kernel_size[0], SPECTRAL_TILE, (0, half)
            )
        else:
            refined = F.conv2d(hidden, conv2.weight, conv2.bias, padding=(0, half))
        del hidden
        return refined.add_(self.upscaler(x[:, :, top:bottom]))
