"""The encoder at inference: the network's steps (``PixelSplatEncoder``) scheduled for
memory and CPU speed. Same result as the network's ``forward`` to float32 rounding.

* the backbone's wide map is never built: it is projected band by band
  (``backbone.project_features``);
* full-resolution transformer features are never built either (unless intermediates are
  asked for): the heads read them band by band from ``upscale_rows``;
* memory the allocator keeps after each large stage is given back (``release_free_memory``),
  so the process's peak is that of one stage, and repeated passes do not grow it.
"""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from ..encoder import EncoderOutput, PixelSplatEncoder
from .backbone import project_features
from .epipolar_transformer import InferenceEpipolarTransformer
from .memory import release_free_memory


class InferenceEncoder(PixelSplatEncoder):
    """``PixelSplatEncoder`` with the inference schedule (module docstring): made by
    ``prepare_for_inference``, never constructed directly. Runs without autograd only."""

    epipolar_transformer: InferenceEpipolarTransformer | None

    def encode_features(
        self, images: Float[Tensor, "batch view 3 h w"], intermediates: dict[str, Tensor] | None = None
    ) -> Float[Tensor, "batch view channel h w"]:
        """The network's ``encode_features``, projected band by band."""
        b = images.shape[0]
        flat = rearrange(images, "b v c h w -> (b v) c h w")
        projected, raw = project_features(
            self.backbone, flat, self.backbone_projection[1], keep_features=intermediates is not None
        )
        features = rearrange(projected, "(b v) c h w -> b v c h w", b=b)
        if intermediates is not None:
            intermediates["backbone"] = rearrange(raw, "(b v) c h w -> b v c h w", b=b)
            intermediates["backbone_projection"] = rearrange(features, "b v c h w -> b v h w c")
        return features

    def forward(
        self,
        images: Float[Tensor, "batch view 3 h w"],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool = True,
        global_step: int = 0,
        return_attention: bool = False,
        return_intermediates: bool = False,
    ) -> EncoderOutput:
        """``PixelSplatEncoder.forward``, under ``torch.no_grad()`` or
        ``torch.inference_mode()`` only."""
        if torch.is_grad_enabled():
            raise RuntimeError(
                "this encoder is prepared for inference and runs without autograd: call it under torch.no_grad() "
                "or torch.inference_mode(), or train the plain network (load_encoder(..., for_inference=False))"
            )
        self._validate(images, extrinsics, intrinsics, near, far)
        b, v = images.shape[:2]
        intermediates: dict[str, Tensor] | None = {} if return_intermediates else None
        features = self.encode_features(images, intermediates)

        sampling, attention = None, None
        transformer = self.epipolar_transformer
        if transformer is not None:
            release_free_memory()  # the backbone's temporaries (the process's peak follows)
            low = transformer.downscale(rearrange(features, "b v c h w -> (b v) c h w"))
            del features  # the full-resolution features are not needed any more
            epipolar = transformer.attend(
                rearrange(low, "(b v) c h w -> b v c h w", b=b), extrinsics, intrinsics, near, far,
                deterministic=deterministic, return_attention=return_attention,
            )  # fmt: skip
            sampling, attention = epipolar.sampling, epipolar.attention
            release_free_memory()  # the backbone's and the transformer's temporaries
            low = rearrange(epipolar.features, "b v c h w -> (b v) c h w")
            if intermediates is not None:
                features = rearrange(transformer.upscale(low), "(b v) c h w -> b v c h w", b=b)
                intermediates["epipolar_transformer"] = features
            else:  # full-resolution rows are made band by band, as the heads need them
                r = max(transformer.cfg.downscale, 1)

                def features(batch: int, view: int, top: int, bottom: int) -> Float[Tensor, "channel rows w"]:
                    index = batch * v + view
                    return transformer.upscale_rows(low[index : index + 1], top // r, bottom // r)[0]

        heads = self.predict_pixels(features, images, extrinsics, intrinsics, near, far, deterministic, global_step)
        output = self.assemble_output(heads, sampling, attention, intermediates)
        release_free_memory()  # the large temporaries of this pass, kept by the allocator
        return output
