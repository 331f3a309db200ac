"""One ray's epipolar samples, for inspection (viewer walkthrough, notebooks): where they
land in each other view, the 3D point and depth each stands for, and the cross-attention
each layer and head gave them. Read from an ``EpipolarSampling`` and the attention weights
a model returned; nothing is recomputed."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from .sampler import EpipolarSampling


@dataclass
class EpipolarTrace:
    """The samples of one ray on its epipolar line in one other view."""

    other_view: int
    valid: bool
    """False when the ray's segment misses the other image (samples carry no features)."""
    xy: Float[Tensor, "sample 2"]
    """Normalised image coordinates of the samples in the other view."""
    depths: Float[Tensor, " sample"] | None
    """Distance along the ray each sample stands for (clipped to [near, far]); None when the
    sampling carries no depths."""
    points: Float[Tensor, "sample 3"] | None
    """World points at those depths on the ray the samples were taken for."""
    attention: Float[Tensor, "layer head sample"] | None
    """Cross-attention weights of each layer and head over this view's samples."""


def trace_ray(
    sampling: EpipolarSampling,
    attention: Float[Tensor, "batch view layer head ray other_view sample"] | None,
    batch: int,
    view: int,
    ray: int,
) -> list[EpipolarTrace]:
    """The samples of ray ``ray`` (row-major on ``sampling.shape``) of context view ``view``,
    one ``EpipolarTrace`` per other view."""
    origin, direction = sampling.origins[batch, view, ray], sampling.directions[batch, view, ray]
    traces = []
    for k, other in enumerate(sampling.other_views[view].tolist()):
        depths = sampling.depths[batch, view, k, ray] if sampling.depths is not None else None
        traces.append(
            EpipolarTrace(
                other_view=other,
                valid=bool(sampling.valid[batch, view, k, ray]),
                xy=sampling.xy_sample[batch, view, k, ray],
                depths=depths,
                points=None if depths is None else origin + depths[:, None] * direction,
                attention=None if attention is None else attention[batch, view, :, :, ray, k],
            )
        )
    return traces
