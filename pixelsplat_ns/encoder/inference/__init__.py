"""Fast CPU inference of the pixelSplat encoder, chosen explicitly when an encoder is
loaded for inference (``load_encoder(..., for_inference=True)``, or
``prepare_for_inference(encoder)``); training and gradients use the plain network.

The network (``pixelsplat_ns.encoder``) says what is computed; this package says how, at
inference, with the same result to float32 rounding:

* ``prepare``: ``prepare_for_inference``, which gives each module its inference class;
* ``encoder``: the schedule (features projected and upscaled band by band, memory released);
* ``backbone``, ``resnet``, ``epipolar_transformer``: the inference classes of the network's parts;
* kernels: ``onednn_linear`` (linear layers through oneDNN), ``spectral_conv`` (FFT
  convolution), ``memory`` (``malloc_trim``).
"""

from .encoder import InferenceEncoder
from .prepare import INFERENCE_CLASSES, is_prepared, prepare_for_inference

__all__ = ["INFERENCE_CLASSES", "InferenceEncoder", "is_prepared", "prepare_for_inference"]
