"""Where per-scene fine-tuning starts (the encoder's prediction, moved to the depths the training views agree on;
its points, optionally spread along their rays; or splatfacto's random cube) and how it refines the Gaussians
(gsplat's DefaultStrategy, adapted): used by the nerfstudio model."""

from pixelsplat_ns.finetune.starts import RefinementStrategy, random_cube_params, refinement_strategy

__all__ = ["RefinementStrategy", "random_cube_params", "refinement_strategy"]
