"""Placeholders for weights that checkpoints carry but the encoder never uses."""

from __future__ import annotations

import torch
from torch import nn


class UnusedWeights(nn.Module):
    """Stands in for a sub-module whose weights the official checkpoints carry but whose
    output the encoder never computes (the DINO ResNet-50's fourth stage: 15M parameters,
    60 MB). It keeps the state-dict keys and shapes — so checkpoints load strictly and
    the key set stays the official one — without holding memory: ``state_dict`` gives
    zero-stride zeros, ``load_state_dict`` checks names and shapes and drops the values.
    """

    def __init__(self, template: nn.Module) -> None:
        super().__init__()
        self.shapes = {key: (tuple(value.shape), value.dtype) for key, value in template.state_dict().items()}

    def forward(self, *args, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("this part of the network is unused; its weights are placeholders")

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        for key, (shape, dtype) in self.shapes.items():
            destination[prefix + key] = torch.zeros((), dtype=dtype).expand(shape)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        for key, (shape, _) in self.shapes.items():
            name = prefix + key
            if name not in state_dict:
                missing_keys.append(name)
            elif tuple(state_dict[name].shape) != shape:
                error_msgs.append(
                    f"size mismatch for {name}: copying a param with shape {tuple(state_dict[name].shape)} "
                    f"from checkpoint, the shape in current model is {shape}."
                )
        for name in state_dict:
            if name.startswith(prefix) and name[len(prefix) :] not in self.shapes:
                unexpected_keys.append(name)

    def state_keys(self, prefix: str = "") -> list[str]:
        return [prefix + key for key in self.shapes]
