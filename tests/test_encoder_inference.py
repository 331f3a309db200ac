"""The encoder prepared for inference (``encoder.inference``) computes the network's
function: same outputs as the plain network to float32 rounding, same state-dict keys and
checkpoints; the plain network has none of it and is the one gradients go through.

Tolerance: relative max error 5e-5 (of the largest magnitude of each output). The prepared
encoder computes the same function with other float32 kernels and summation orders
(oneDNN instead of MKL matrix products, batch norm folded into the convolutions, the
upscaling fused into one low-resolution convolution, FFT convolution, banded bilinear
upsampling): each step differs by float32 rounding (~1e-7 relative), and through the
official architecture (a 12-block ViT-B/8, ResNet-50, the epipolar transformer) that grows
to 1e-6 - 3e-6 at the transformer's output and depth distribution, 7e-6 in means and
scales, 1.5e-5 in covariances (products of two scales) on the parity pair. 5e-5 leaves
about three times that and is still half the official-parity tolerance (1e-4,
``test_official_parity``); a wrong weight or a misplaced band is off by far more.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from pixelsplat_ns.encoder import EncoderOutput, PixelSplatEncoder, encoder_config
from pixelsplat_ns.encoder.epipolar_transformer import EpipolarTransformer
from pixelsplat_ns.encoder.inference import InferenceEncoder, is_prepared, prepare_for_inference
from pixelsplat_ns.fixture_weights import fill_deterministic
from pixelsplat_ns.official import load_checkpoint, save_checkpoint
from pixelsplat_ns.weights import load_encoder
from tests.conftest import FIXTURES, require
from tests.test_encoder import make_scene, tiny_encoder

TOLERANCE = 5e-5
NETWORK_SOURCES = [
    *sorted((Path(__file__).parents[1] / "pixelsplat_ns" / "encoder").glob("*.py")),
    *sorted((Path(__file__).parents[1] / "pixelsplat_ns" / "epipolar").glob("*.py")),
]


def relative_max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def assert_same_outputs(actual: EncoderOutput, expected: EncoderOutput) -> None:
    for name in ("means", "covariances", "harmonics", "opacities", "scales", "rotations"):
        a, e = getattr(actual.gaussians, name), getattr(expected.gaussians, name)
        assert a.shape == e.shape and relative_max_error(a, e) <= TOLERANCE, name
    assert torch.equal(actual.depth_index, expected.depth_index)  # the same buckets were taken
    for name in ("depth_pdf", "depth_offset", "depths"):
        assert relative_max_error(getattr(actual, name), getattr(expected, name)) <= TOLERANCE, name


# ------------------------------------------------------------------------------ parity fixture


@pytest.fixture(scope="module")
def parity_runs() -> dict[str, dict[str, EncoderOutput]]:
    """The official architecture with the fixture's weights on the fixture's real pair:
    outputs of the plain network, then of the same encoder prepared for inference."""
    inputs = torch.load(require(FIXTURES / "parity_pair_a64.pt"), map_location="cpu", weights_only=False)["inputs"]
    batch = (inputs["image"], inputs["extrinsics"], inputs["intrinsics"], inputs["near"], inputs["far"])
    encoder = fill_deterministic(PixelSplatEncoder(encoder_config("official"))).eval()
    runs = {}
    for name in ("network", "inference"):
        if name == "inference":
            assert not is_prepared(encoder)
            prepare_for_inference(encoder)
        with torch.inference_mode():
            runs[name] = {
                "plain": encoder(*batch, return_attention=True),
                "intermediates": encoder(*batch, return_intermediates=True),
            }
    return runs


@pytest.mark.parametrize("run", ["plain", "intermediates"])
def test_prepared_encoder_matches_the_network_on_the_parity_pair(parity_runs, run):
    """Banded (``plain``) and with full-resolution intermediates: the same Gaussians."""
    assert_same_outputs(parity_runs["inference"][run], parity_runs["network"][run])


def test_prepared_attention_and_intermediates_match_the_network(parity_runs):
    network, inference = parity_runs["network"], parity_runs["inference"]
    assert relative_max_error(inference["plain"].attention, network["plain"].attention) <= TOLERANCE
    expected = network["intermediates"].intermediates
    actual = inference["intermediates"].intermediates
    assert set(actual) == set(expected) == {
        "backbone", "backbone_projection", "epipolar_transformer", "depth_pdf", "depth_offset"
    }  # fmt: skip
    for name, value in expected.items():
        assert relative_max_error(actual[name], value) <= TOLERANCE, name


# ------------------------------------------------------------------------------ the plain network


def test_network_modules_hold_no_inference_scheduling():
    """No autograd-dependent branches, memory trimming or weight caches in the network."""
    for path in NETWORK_SOURCES:
        source = path.read_text()
        for banned in ("is_grad_enabled", "malloc_trim", "release_free_memory", "data_ptr", "import inference"):
            assert banned not in source, f"{path.name} mentions {banned}"
        assert not re.search(r"from \S*inference\S* import", source), f"{path.name} imports the inference code"


def test_plain_network_has_no_inference_modules():
    assert not is_prepared(tiny_encoder())
    plain = load_encoder("tiny")
    assert type(plain) is PixelSplatEncoder and not is_prepared(plain)
    prepared = load_encoder("tiny", for_inference=True)
    assert isinstance(prepared, InferenceEncoder) and is_prepared(prepared) and not prepared.training


def test_gradients_flow_through_the_plain_network():
    encoder = load_encoder("tiny").train()
    out = encoder(**make_scene(size=(32, 32)), deterministic=False)
    g = out.gaussians
    (g.means.square().mean() + g.harmonics.square().mean() + g.opacities.mean()).backward()
    for name, module in encoder.named_children():
        grads = [p.grad for p in module.parameters()]
        if grads:
            assert any(grad is not None and grad.abs().sum() > 0 for grad in grads), name


def test_prepared_encoder_refuses_autograd():
    encoder = prepare_for_inference(tiny_encoder())
    with pytest.raises(RuntimeError, match="without autograd"):
        encoder(**make_scene(size=(32, 32)))


# ------------------------------------------------------------------------------ weights and checkpoints


def test_preparation_keeps_parameters_and_state_dict():
    encoder = tiny_encoder()
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    parameters = [id(p) for p in encoder.parameters()]
    prepare_for_inference(encoder)
    assert [id(p) for p in encoder.parameters()] == parameters  # the same tensors, no copies
    after = encoder.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_prepared_encoder_saves_the_network_checkpoint(tmp_path):
    scene = make_scene(size=(32, 32))
    prepared = prepare_for_inference(tiny_encoder())
    path = save_checkpoint(prepared, tmp_path / "prepared.ckpt")
    loaded = load_checkpoint(path)
    assert type(loaded) is PixelSplatEncoder
    with torch.no_grad():
        assert_same_outputs(prepared(**scene), loaded(**scene))


def test_a_prepared_encoder_pickles():
    """(A pickled module keeps its hooks: the one preparation registers must be picklable.)"""
    scene = make_scene(size=(32, 32))
    prepared = prepare_for_inference(tiny_encoder())
    copy = pickle.loads(pickle.dumps(prepared))
    with torch.no_grad():
        assert_same_outputs(copy(**scene), prepared(**scene))


def test_weights_loaded_after_preparation_are_used():
    """The fused weights follow load_state_dict (they are derived again)."""
    scene = make_scene(size=(32, 32))
    other = tiny_encoder(seed=5)
    encoder = prepare_for_inference(tiny_encoder(seed=0))
    encoder.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert_same_outputs(encoder(**scene), other(**scene))


def test_prepared_encoder_follows_a_cast():
    """The fused weights follow to() / double() (float64: no oneDNN linear, FFT in float64)."""
    scene = make_scene(size=(32, 32), dtype=torch.float64)
    network = tiny_encoder().double()
    encoder = prepare_for_inference(tiny_encoder()).double()
    assert encoder.epipolar_transformer.refinement_spectrum.dtype == torch.complex128
    with torch.no_grad():
        assert_same_outputs(encoder(**scene), network(**scene))


# ------------------------------------------------------------------------------ parts


@pytest.mark.parametrize("rows, cols", [(40, 24), (16, 16), (5, 7)])
def test_fused_upscaling_matches_the_network(rows, cols):
    """Upscaler + 7x7 refinement as a low-resolution 3x3 conv in bands, the last conv
    through the FFT: equal to the network's modules (including image borders and band seams)."""
    torch.manual_seed(0)
    transformer = prepare_for_inference(tiny_encoder()).epipolar_transformer
    x = torch.randn(2, transformer.upscaler.in_channels, rows, cols)
    with torch.no_grad():
        plain = EpipolarTransformer.upscale(transformer, x)
        fused = transformer.upscale(x)
    assert fused.shape == plain.shape == (2, x.shape[1], rows * 4, cols * 4)
    assert relative_max_error(fused, plain) < 1e-5  # one part: tighter than the whole encoder's TOLERANCE


def test_more_views_and_no_transformer_prepare():
    """Encoders without the epipolar transformer, and 3-view ones, run prepared too."""
    for changes in ({"use_epipolar_transformer": False}, {"num_views": 3}):
        views = changes.get("num_views", 2)
        scene = make_scene(views=views, size=(32, 32))
        network = tiny_encoder(**changes)
        encoder = prepare_for_inference(tiny_encoder(**changes))
        with torch.no_grad():
            assert_same_outputs(encoder(**scene), network(**scene))
