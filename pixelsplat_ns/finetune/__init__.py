"""Per-scene fine-tuning of predicted Gaussians, and the starts from scratch it is compared with."""

from pixelsplat_ns.finetune.optimize import FitConfig, fit_splats, photometric_loss
from pixelsplat_ns.finetune.pairs import merge_splats, scale_splats, splats_from_pairs
from pixelsplat_ns.finetune.splats import (
    Splats,
    pixel_splats,
    random_splats,
    render_splats,
    splats_from_gaussians,
)

__all__ = [
    "FitConfig",
    "Splats",
    "fit_splats",
    "merge_splats",
    "photometric_loss",
    "pixel_splats",
    "random_splats",
    "render_splats",
    "scale_splats",
    "splats_from_gaussians",
    "splats_from_pairs",
]
