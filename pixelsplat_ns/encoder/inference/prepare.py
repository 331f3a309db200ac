"""``prepare_for_inference``: a built encoder -> the same encoder, run by the inference code.

Each module whose inference is computed differently takes the inference subclass of its
class (``module.__class__`` is swapped, as ``torch.nn.utils.parametrize`` does): the
subclasses add no parameters or buffers, so the module tree, the parameters and the
state-dict keys stay those of the network, and checkpoints save and load as before.
"""

from __future__ import annotations

from torch import nn

from ..encoder import PixelSplatEncoder
from ..epipolar_transformer import EpipolarTransformer
from ..resnet import BasicBlock, Bottleneck, ResNet
from .encoder import InferenceEncoder
from .epipolar_transformer import InferenceEpipolarTransformer
from .onednn_linear import OneDnnLinear
from .resnet import ChannelsLastResNet, FoldedBasicBlock, FoldedBottleneck

INFERENCE_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    PixelSplatEncoder: InferenceEncoder,
    EpipolarTransformer: InferenceEpipolarTransformer,
    ResNet: ChannelsLastResNet,
    BasicBlock: FoldedBasicBlock,
    Bottleneck: FoldedBottleneck,
    nn.Linear: OneDnnLinear,
}
"""Network class -> its inference subclass (exact classes: subclasses of these are kept)."""


def prepare_for_inference(encoder: PixelSplatEncoder) -> InferenceEncoder:
    """Prepare ``encoder`` (in place) for fast inference and return it, in eval mode.

    Its forward then computes the network's function with the inference code: linear
    layers through oneDNN, the ResNet channels-last with batch norm folded into its
    convolutions, the backbone projected and the transformer's features upscaled band by
    band (the upscaling fused into one low-resolution conv, its last 7x7 conv through the
    FFT on the CPU), memory given back to the system between stages. Outputs equal the
    network's to float32 rounding; it refuses to run with autograd on (train the plain
    network).

    Prepare once the weights are final (loaded, moved to their device): the fused weights
    are derived here, and again after ``load_state_dict`` or ``to`` / ``double`` ..., but not
    after other in-place edits of the parameters."""
    if isinstance(encoder, InferenceEncoder):
        return encoder
    if type(encoder) is not PixelSplatEncoder:
        raise TypeError(f"prepare_for_inference takes a PixelSplatEncoder, got {type(encoder).__name__}")
    for module in encoder.modules():
        inference_class = INFERENCE_CLASSES.get(type(module))
        if inference_class is not None:
            module.__class__ = inference_class
        if isinstance(module, InferenceEpipolarTransformer):
            module.derive_weights()
            module.register_load_state_dict_post_hook(_derive_weights_again)
    return encoder.eval()


def _derive_weights_again(transformer: InferenceEpipolarTransformer, _incompatible_keys: object) -> None:
    # A module-level hook (not a lambda), so that a prepared encoder still pickles.
    transformer.derive_weights()


def is_prepared(module: nn.Module) -> bool:
    """Whether any part of ``module`` runs the inference code."""
    inference_classes = tuple(INFERENCE_CLASSES.values())
    return any(isinstance(m, inference_classes) for m in module.modules())
