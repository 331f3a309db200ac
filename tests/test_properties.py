"""Property-based tests (hypothesis): every conversion goes there and back, and the data
readers survive damaged files.

The example-based tests (``test_cameras``, ``test_gaussians``, ``test_data_chunks``) pin a
few hand-picked values. A sign slip that shows only for some rotations, or a reader that
crashes on one damaged byte in a thousand, passes them; here hypothesis draws the inputs.

(a) The conversions of ``cameras.py`` and ``gaussians.py``, in float64 where the API allows:
    OpenGL <-> OpenCV poses (and gsplat's view matrix), pixel <-> normalised intrinsics,
    chunk camera rows, quaternion <-> rotation matrix, covariance <-> scales + quaternion,
    official -> gsplat SH (no inverse can exist: the 16 official functions span only 15
    dimensions; instead the two evaluators give the same colour, colours fitted back in
    the official basis give the same colours, fewer bands truncate gsplat's basis, degree
    0 is unchanged, and it is linear), and ``prepare_context``'s caller <-> encoder frame
    (widest baseline 1, projections kept through resize and crop, Gaussians mapped back).
(b) The chunk and scene-folder readers (``data/chunks.py``, ``data/scenes.py``,
    ``data/sources.py``) fed truncated, bit-flipped and wrong-typed input. A read must end
    in a clean skip (a DataWarning that names what was skipped) or in one of the project's
    own errors with a one-line message: never another exception, never a hang (every read
    runs under an alarm), and one damaged scene never takes an intact neighbour with it.
"""

from __future__ import annotations

import io
import json
import math
import signal
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import Tensor

from pixelsplat_ns.cameras import (
    chunk_cameras_to_opencv,
    denormalize_intrinsics,
    gaussians_to_caller_frame,
    normalize_intrinsics,
    opencv_to_chunk_cameras,
    opencv_to_opengl_c2w,
    opengl_c2w_to_viewmat,
    opengl_to_opencv_c2w,
    prepare_context,
    to_caller_frame,
)
from pixelsplat_ns.data.chunks import CHUNK_SUFFIX, INDEX_NAME, ChunkSource, scene_to_chunk_item
from pixelsplat_ns.data.scenes import DataWarning, FrameImages, ImageDecodeError, Scene, scene_problem
from pixelsplat_ns.data.sources import open_scene_source
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.gaussians import (
    build_covariance,
    covariance_to_scales_quaternions,
    matrix_to_quaternion,
    official_sh_basis,
    official_to_gsplat_sh,
)
from pixelsplat_ns.rendering.projection import quaternion_to_matrix
from pixelsplat_ns.rendering.sh import eval_sh
from tests.test_data_chunks import line_cameras, synthetic_frames, write_scene_folder

# No example database: it would leave a .hypothesis/ folder in the repository.
PROPERTY = settings(deadline=None, database=None, max_examples=50)
READ_SECONDS = 10.0  # a read of these tiny files takes milliseconds; more means a hang

# ==========================================================================================
# (a) Conversions
# ==========================================================================================


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def vectors(bound: float) -> st.SearchStrategy[Tensor]:
    return st.tuples(*[finite(-bound, bound)] * 3).map(lambda v: torch.tensor(v, dtype=torch.float64))


def unit_quaternions() -> st.SearchStrategy[Tensor]:
    """Normalised wxyz quaternions (drawn away from zero so normalising is well conditioned)."""
    raw = st.tuples(*[finite(-1, 1)] * 4).filter(lambda q: math.fsum(v * v for v in q) > 0.01)
    return raw.map(lambda q: torch.tensor(q, dtype=torch.float64)).map(lambda q: q / q.norm())


def rotation_from_vector(rotation_vector: Tensor) -> Tensor:
    """The rotation by |v| radians about v (Rodrigues' formula; independent of the project,
    and exact to rounding, which torch.linalg.matrix_exp is not for small angles)."""
    angle = rotation_vector.norm().item()
    if angle == 0:
        return torch.eye(3, dtype=torch.float64)
    x, y, z = (rotation_vector / angle).tolist()
    axis = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * axis + (1 - math.cos(angle)) * axis @ axis


def rotation_vector_of(quaternion: Tensor) -> Tensor:
    """The rotation vector (angle times axis) a wxyz unit quaternion stands for."""
    w, xyz = quaternion[0], quaternion[1:]
    sine = xyz.norm()
    if sine == 0:
        return torch.zeros(3, dtype=torch.float64)
    return 2 * torch.atan2(sine, w) * xyz / sine


def pose(rotation: Tensor, translation: Tensor) -> Tensor:
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3], matrix[:3, 3] = rotation, translation
    return matrix


def poses(max_translation: float = 10.0) -> st.SearchStrategy[Tensor]:
    """4x4 rigid camera-to-world matrices (float64)."""
    return st.builds(lambda v, t: pose(rotation_from_vector(v), t), vectors(math.pi), vectors(max_translation))


def log_uniform(low_exponent: float, high_exponent: float) -> st.SearchStrategy[float]:
    return finite(low_exponent, high_exponent).map(lambda e: 10.0**e)


def assert_same_up_to_sign(actual: Tensor, expected: Tensor, atol: float) -> None:
    error = min((actual - expected).abs().max().item(), (actual + expected).abs().max().item())
    assert error <= atol, f"{actual} != +-{expected} (error {error:.2e})"


# --- poses -------------------------------------------------------------------------------------


@PROPERTY
@given(poses())
def test_opengl_opencv_poses_round_trip(c2w_gl: Tensor):
    c2w_cv = opengl_to_opencv_c2w(c2w_gl[:3])  # 3x4 poses come back homogeneous
    assert torch.equal(opencv_to_opengl_c2w(c2w_cv), c2w_gl)  # sign flips only: exact
    # The same camera: same centre, OpenGL looks along -Z and OpenCV along +Z, still a rotation.
    assert torch.equal(c2w_cv[:3, 3], c2w_gl[:3, 3])
    assert torch.equal(c2w_cv[:3, 2], -c2w_gl[:3, 2])
    assert torch.linalg.det(c2w_cv[:3, :3]).item() == pytest.approx(1.0, abs=1e-12)
    # gsplat's world-to-camera matrix inverts the OpenCV camera-to-world one.
    viewmat = opengl_c2w_to_viewmat(c2w_gl)
    torch.testing.assert_close(viewmat @ c2w_cv, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)


@st.composite
def pixel_intrinsics(draw: st.DrawFn) -> tuple[Tensor, int, int]:
    """(pixel K with positive focal lengths, width, height)."""
    width, height = draw(st.integers(1, 8192)), draw(st.integers(1, 8192))
    fx, fy = draw(log_uniform(-1, 5)), draw(log_uniform(-1, 5))
    cx, cy, skew = draw(finite(0, width)), draw(finite(0, height)), draw(finite(-1, 1))
    k = torch.tensor([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return k, width, height


@PROPERTY
@given(st.lists(pixel_intrinsics(), min_size=1, max_size=4), vectors(10))
def test_pixel_normalised_intrinsics_round_trip(cameras: list[tuple[Tensor, int, int]], point: Tensor):
    k = torch.stack([camera[0] for camera in cameras])
    widths = torch.tensor([camera[1] for camera in cameras], dtype=torch.float64)
    heights = torch.tensor([camera[2] for camera in cameras], dtype=torch.float64)
    normalised = normalize_intrinsics(k, widths, heights)  # per-view sizes, batched
    # (atol: a float64 underflow of a tiny skew divided by the width is not an error)
    torch.testing.assert_close(denormalize_intrinsics(normalised, widths, heights), k, rtol=1e-14, atol=1e-300)
    # One camera with plain int sizes gives the same as the batch.
    single = normalize_intrinsics(k[0], cameras[0][1], cameras[0][2])
    torch.testing.assert_close(single, normalised[0], rtol=1e-15, atol=1e-300)
    # Normalised K projects a point to its pixel coordinates divided by the image size.
    point = torch.cat((point[:2], point[2:].abs() + 0.1))
    pixels = (k @ point) / (k @ point)[:, 2:]
    fractions = (normalised @ point) / (normalised @ point)[:, 2:]
    torch.testing.assert_close(fractions[:, 0], pixels[:, 0] / widths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fractions[:, 1], pixels[:, 1] / heights, rtol=1e-12, atol=1e-12)


@st.composite
def normalised_intrinsics(draw: st.DrawFn) -> Tensor:
    fx, fy = draw(log_uniform(-1, 1.5)), draw(log_uniform(-1, 1.5))
    cx, cy = draw(finite(0, 1)), draw(finite(0, 1))
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


@PROPERTY
@given(st.lists(st.tuples(poses(), normalised_intrinsics()), min_size=1, max_size=4))
def test_chunk_camera_rows_round_trip(cameras: list[tuple[Tensor, Tensor]]):
    c2w = torch.stack([camera[0] for camera in cameras])
    k = torch.stack([camera[1] for camera in cameras])
    rows = opencv_to_chunk_cameras(c2w, k)
    assert rows.shape == (len(cameras), 18) and rows.dtype == torch.float32
    assert (rows[:, 4:6] == 0).all()
    back_c2w, back_k = chunk_cameras_to_opencv(rows)
    # The format stores float32: exact to float32 rounding of values up to ~10.
    torch.testing.assert_close(back_c2w.double(), c2w, atol=2e-5, rtol=0)
    torch.testing.assert_close(back_k.double(), k, atol=1e-7, rtol=2e-7)


# --- rotations and covariances ------------------------------------------------------------------


@PROPERTY
@given(unit_quaternions(), log_uniform(-1, 1), st.booleans())
def test_quaternion_matrix_round_trip(quaternion: Tensor, norm: float, negate: bool):
    rotation = quaternion_to_matrix(quaternion)
    identity = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(rotation @ rotation.T, identity, atol=1e-12, rtol=0)
    assert torch.linalg.det(rotation).item() == pytest.approx(1.0, abs=1e-12)
    # gsplat's convention: (cos a/2, sin a/2 axis) is the right-handed rotation by a about axis.
    expected = rotation_from_vector(rotation_vector_of(quaternion))
    torch.testing.assert_close(rotation, expected, atol=1e-12, rtol=0)
    # Any norm, either sign: the same rotation.
    scaled = quaternion * norm * (-1 if negate else 1)
    torch.testing.assert_close(quaternion_to_matrix(scaled), rotation, atol=1e-12, rtol=0)
    back = matrix_to_quaternion(rotation)
    assert back[0] >= 0 and back.norm().item() == pytest.approx(1.0, abs=1e-12)
    assert_same_up_to_sign(back, quaternion, atol=1e-12)


def scale_triples() -> st.SearchStrategy[Tensor]:
    """Positive standard deviations from 1e-3 to 10 (covariance condition numbers up to 1e8)."""
    return st.tuples(*[log_uniform(-3, 1)] * 3).map(lambda s: torch.tensor(s, dtype=torch.float64))


@PROPERTY
@given(scale_triples(), unit_quaternions())
def test_covariance_scales_quaternion_round_trip(scales: Tensor, quaternion: Tensor):
    covariance = build_covariance(scales, quaternion)
    largest = scales.max().item() ** 2
    torch.testing.assert_close(covariance, covariance.T, atol=1e-14 * largest, rtol=0)
    recovered_scales, recovered_quaternion = covariance_to_scales_quaternions(covariance)
    assert recovered_scales.dtype == recovered_quaternion.dtype == torch.float64
    assert recovered_quaternion[0] >= 0
    assert recovered_quaternion.norm().item() == pytest.approx(1.0, abs=1e-12)
    rebuilt = build_covariance(recovered_scales, recovered_quaternion)
    torch.testing.assert_close(rebuilt, covariance, atol=1e-12 * largest, rtol=0)
    # The same variances, in eigenvalue order (axes are only defined up to order and sign).
    torch.testing.assert_close(
        recovered_scales.sort().values ** 2, scales.sort().values ** 2, atol=1e-12 * largest, rtol=1e-9
    )


# --- spherical harmonics ------------------------------------------------------------------------


@st.composite
def official_harmonics(draw: st.DrawFn) -> Tensor:
    """[3 (rgb), (degree + 1)^2] official-basis coefficients, degree 0-4."""
    degree = draw(st.integers(0, 4))
    values = draw(hnp.arrays(np.float64, (3, (degree + 1) ** 2), elements=finite(-2, 2)))
    return torch.from_numpy(values)


def directions() -> st.SearchStrategy[Tensor]:
    """Viewing directions of any length (the evaluators normalise them)."""
    return vectors(5).filter(lambda d: d.norm() > 0.1)


def converted_degree(harmonics: Tensor) -> int:
    return min(math.isqrt(harmonics.shape[-1]) - 1, 3)


@PROPERTY
@given(official_harmonics(), directions())
def test_sh_conversion_keeps_the_official_colour(harmonics: Tensor, direction: Tensor):
    degree = converted_degree(harmonics)
    k = (degree + 1) ** 2
    converted = official_to_gsplat_sh(harmonics)
    assert converted.shape == (k, 3)
    # The official renderer evaluates degrees <= 3 (it ignores a degree-4 band).
    official = official_sh_basis(direction / direction.norm())[:k] @ harmonics[:, :k].T
    gsplat = eval_sh(degree, direction, converted)  # the CPU rasteriser's gsplat evaluator
    torch.testing.assert_close(gsplat, official, atol=1e-12, rtol=0)


def sphere_directions(count: int = 64) -> Tensor:
    """Evenly spread unit directions (a Fibonacci lattice): enough to pin degree-3 SH."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / count
    angle = math.pi * (1 + 5**0.5) * i
    r = (1 - z * z).sqrt()
    return torch.stack((r * angle.cos(), r * angle.sin(), z), dim=-1)


@PROPERTY
@given(official_harmonics(), directions(), st.data())
def test_sh_conversion_round_trips_through_colours(harmonics: Tensor, probe: Tensor, data: st.DataObject):
    degree = converted_degree(harmonics)
    k = (degree + 1) ** 2
    converted = official_to_gsplat_sh(harmonics)  # [k, 3]
    torch.testing.assert_close(converted[0], harmonics[:, 0], atol=1e-14, rtol=0)  # degree 0 unchanged
    # There is no inverse function, and there cannot be one for coefficients: the official
    # basis's 16 functions span only 15 dimensions. Back through colours instead: fit official
    # coefficients to gsplat's colours, and they give the original colours everywhere.
    fit_directions = sphere_directions()
    colours = eval_sh(degree, fit_directions, converted.expand(len(fit_directions), k, 3))
    recovered = torch.linalg.lstsq(official_sh_basis(fit_directions)[:, :k], colours).solution  # [k, 3]
    basis = official_sh_basis(probe / probe.norm())[:k]
    torch.testing.assert_close(basis @ recovered, basis @ harmonics[:, :k].T, atol=1e-10, rtol=0)
    # Fewer bands: gsplat's (orthonormal) basis is truncated after the conversion, which keeps
    # the closest colours of that degree. The official basis is not band-limited per index
    # (its function 14, z(zz - xx), has a degree-1 part), so truncating it first would not.
    for band in range(degree + 1):
        truncated = official_to_gsplat_sh(harmonics, max_degree=band)
        torch.testing.assert_close(truncated, converted[: (band + 1) ** 2], atol=1e-15, rtol=0)
    other = torch.from_numpy(data.draw(hnp.arrays(np.float64, harmonics.shape, elements=finite(-2, 2))))
    factor = data.draw(finite(-3, 3))
    torch.testing.assert_close(
        official_to_gsplat_sh(factor * harmonics + other),
        factor * converted + official_to_gsplat_sh(other),
        atol=1e-12,
        rtol=0,
    )


# --- caller frame <-> encoder frame ----------------------------------------------------------------


@dataclass
class ContextSetup:
    """Context cameras as nerfstudio gives them: OpenGL c2w and pixel K, float64."""

    c2w_gl: Tensor  # [view, 4, 4]
    k_pixels: Tensor  # [view, 3, 3]
    height: int
    width: int
    long_side: int | None
    pixel: tuple[float, float]  # where view 0 sees the probe point
    depth: float


@st.composite
def context_setups(draw: st.DrawFn) -> ContextSetup:
    views = draw(st.integers(2, 3))
    c2w = [draw(poses()) for _ in range(views)]
    origins = torch.stack([c[:3, 3] for c in c2w])
    # Well-conditioned: no two cameras closer than 0.05 (the code refuses identical ones).
    distances = (origins[:, None] - origins[None]).norm(dim=-1) + torch.eye(views) * 1e9
    assume(distances.min() >= 0.05)
    height, width = draw(st.integers(16, 48)), draw(st.integers(16, 48))
    ks = []
    for _ in range(views):
        f = draw(finite(0.5, 2.0)) * width
        ks.append([[f, 0.0, draw(finite(0.3, 0.7)) * width], [0.0, f * draw(finite(0.8, 1.25)), height / 2], [0, 0, 1]])
    # Resized so the short side stays above the 8-pixel crop multiple.
    long_side = draw(st.none() | st.integers(32, 48))
    pixel = (draw(finite(0, width)), draw(finite(0, height)))
    k_pixels = torch.tensor(ks, dtype=torch.float64)
    return ContextSetup(torch.stack(c2w), k_pixels, height, width, long_side, pixel, draw(finite(0.5, 20)))


def project(c2w_cv: Tensor, k: Tensor, point: Tensor) -> tuple[Tensor, Tensor]:
    """(pixel coordinates, depth) of a world point in an OpenCV camera."""
    camera = c2w_cv[:3, :3].T @ (point - c2w_cv[:3, 3])
    return (k @ camera)[:2] / camera[2], camera[2]


@settings(PROPERTY, max_examples=30)
@given(context_setups())
def test_prepare_context_frame_round_trip(setup: ContextSetup):
    images = torch.zeros(setup.c2w_gl.shape[0], setup.height, setup.width, 3)
    views = prepare_context(
        images, setup.c2w_gl[:, :3].float(), setup.k_pixels.float(), image_multiple=8,
        long_side=setup.long_side, gaussian_long_side=setup.long_side or max(setup.height, setup.width),
    )  # fmt: skip
    extrinsics, scale = views.extrinsics[0].double(), views.scene_scale
    c2w_cv = opengl_to_opencv_c2w(setup.c2w_gl)
    # The encoder frame: same rotations, translations scaled so the widest baseline is 1 ...
    origins = extrinsics[:, :3, 3]
    assert (origins[:, None] - origins[None]).norm(dim=-1).max().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(extrinsics[:, :3, :3], c2w_cv[:, :3, :3], atol=1e-6, rtol=0)
    # ... and to_caller_frame brings the camera centres back.
    reach = c2w_cv[:, :3, 3].abs().max().item() + 1
    torch.testing.assert_close(to_caller_frame(origins, scale), c2w_cv[:, :3, 3], atol=2e-6 * reach, rtol=0)

    # A world point seen by view 0 projects where the resized, cropped camera says it does.
    u, v = setup.pixel
    ray = torch.linalg.solve(setup.k_pixels[0], torch.tensor([u, v, 1.0], dtype=torch.float64))
    point = c2w_cv[0, :3, :3] @ (ray * setup.depth) + c2w_cv[0, :3, 3]
    resized_h, resized_w = views.full_image.shape[-2:]
    crop_h, crop_w = views.image.shape[-2:]
    shift = torch.tensor([(resized_w - crop_w) // 2, (resized_h - crop_h) // 2], dtype=torch.float64)
    resize = torch.tensor([resized_w / setup.width, resized_h / setup.height], dtype=torch.float64)
    for view in range(setup.c2w_gl.shape[0]):
        pixels, depth = project(c2w_cv[view], setup.k_pixels[view], point)
        if depth < 0.5:
            continue  # behind (or grazing) this camera
        k_crop = denormalize_intrinsics(views.intrinsics[0, view].double(), crop_w, crop_h)
        encoder_pixels, encoder_depth = project(extrinsics[view], k_crop, point * scale)
        assert encoder_depth.item() == pytest.approx(depth.item() * scale, rel=1e-4)
        atol = 2e-3 + 1e-4 * pixels.abs().max().item()  # the encoder frame is float32
        torch.testing.assert_close(encoder_pixels, pixels * resize - shift, atol=atol, rtol=0)
        # The uncropped photos for native Gaussians: resized only.
        k_full = denormalize_intrinsics(views.full_intrinsics[0, view].double(), resized_w, resized_h)
        full_pixels, _ = project(extrinsics[view], k_full, point * scale)
        torch.testing.assert_close(full_pixels, pixels * resize, atol=atol, rtol=0)


@PROPERTY
@given(vectors(5), scale_triples(), unit_quaternions(), vectors(5), log_uniform(-2, 2))
def test_gaussians_map_back_to_the_caller_frame(
    mean: Tensor, scales: Tensor, quaternion: Tensor, probe: Tensor, scene_scale: float
):
    covariance = build_covariance(scales, quaternion)
    caller_mean, caller_covariance = gaussians_to_caller_frame(mean, covariance, scene_scale)
    torch.testing.assert_close(caller_mean * scene_scale, mean, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(caller_covariance * scene_scale**2, covariance, atol=0, rtol=1e-12)
    # The Gaussian is the same shape in both frames: its standard deviations scale with the
    # means, and every point keeps its Mahalanobis distance.
    caller_scales, _ = covariance_to_scales_quaternions(caller_covariance)
    torch.testing.assert_close(caller_scales.sort().values, scales.sort().values / scene_scale, rtol=1e-6, atol=0)

    def mahalanobis(x: Tensor, m: Tensor, c: Tensor) -> float:
        return ((x - m) @ torch.linalg.solve(c, x - m)).item()

    expected = mahalanobis(probe, mean, covariance)
    actual = mahalanobis(to_caller_frame(probe, scene_scale), caller_mean, caller_covariance)
    assert actual == pytest.approx(expected, rel=1e-6, abs=1e-9)


# ==========================================================================================
# (b) Readers fed damaged input
# ==========================================================================================


class ReadTimedOut(BaseException):
    """Raised by the alarm; a BaseException so that the readers' ``except Exception`` cannot
    swallow it."""


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Fail with ReadTimedOut if the block runs longer than ``seconds`` (never hang the suite)."""

    def ring(signum: int, frame: object) -> None:
        raise ReadTimedOut(f"the read did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per hypothesis example (pytest's tmp_path is shared between them)."""
    with tempfile.TemporaryDirectory(prefix="pixelsplat-properties-") as folder:
        yield Path(folder)


# The project's own "this input is unusable" errors.
PROJECT_ERRORS = (PixelSplatInputError, ImageDecodeError)


@dataclass
class ReadOutcome:
    """What reading a damaged data folder gave."""

    scenes: dict[str, Scene] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)  # DataWarning messages
    errors: list[Exception] = field(default_factory=list)  # project errors raised while reading
    undecodable: dict[str, list[int]] = field(default_factory=dict)  # scene key -> frames
    offered: list[str] = field(default_factory=list)  # the keys an index lists

    def assert_clean(self) -> None:
        """Every message one line; every scene handed out usable."""
        for message in [*self.skips, *(str(error) for error in self.errors)]:
            assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
        for key, scene in self.scenes.items():
            assert scene_problem(scene) is None, f"scene {key} was handed out but is unusable"

    def skipped(self, name: str) -> bool:
        return any(name in message for message in self.skips)


def decode_all(scene: Scene, outcome: ReadOutcome) -> None:
    for index in range(len(scene)):
        try:
            frame = scene.images[index]
        except ImageDecodeError as error:
            outcome.errors.append(error)
            outcome.undecodable.setdefault(scene.key, []).append(index)
            continue
        assert frame.ndim == 3 and frame.shape[0] == 3


@contextmanager
def reading(outcome: ReadOutcome) -> Iterator[None]:
    """Record DataWarnings and project errors; anything else escapes and fails the test."""
    with warnings.catch_warnings(record=True) as caught, alarm(READ_SECONDS):
        warnings.simplefilter("always")
        try:
            yield
        except PROJECT_ERRORS as error:
            outcome.errors.append(error)
    outcome.skips += [str(warning.message) for warning in caught if issubclass(warning.category, DataWarning)]


def stream(path: Path) -> ReadOutcome:
    """Open ``path`` as training data (``open_scene_source``), stream every scene and decode
    every frame: what a training run does."""
    outcome = ReadOutcome()
    with reading(outcome):
        source = open_scene_source(path)
        for shard in source.shards():
            for scene in source.scenes(shard):
                outcome.scenes[scene.key] = scene
                decode_all(scene, outcome)
    outcome.assert_clean()
    return outcome


def look_up(root: Path) -> ReadOutcome:
    """Random access through a chunk folder's index: every indexed key, one at a time."""
    outcome = ReadOutcome()
    with reading(outcome):
        source = ChunkSource(root)
        outcome.offered = source.keys()
        for key in outcome.offered:
            try:
                outcome.scenes[key] = source.load_scene(key)
            except PROJECT_ERRORS as error:
                outcome.errors.append(error)
    outcome.assert_clean()
    return outcome


# --- chunk files ------------------------------------------------------------------------------------

CHUNK = "000000" + CHUNK_SUFFIX
NEIGHBOUR_CHUNK = "000001" + CHUNK_SUFFIX
FRAMES = 3


def chunk_item(key: str, seed: int) -> dict:
    """A valid chunk entry of FRAMES tiny PNG frames on a line of cameras."""
    c2w, k = line_cameras(FRAMES)
    scene = Scene(key, FrameImages(synthetic_frames(FRAMES, seed, (6, 8))), c2w, k, (6, 8), url=f"https://x/{key}")
    return scene_to_chunk_item(scene)


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@cache
def valid_chunk() -> bytes:
    """Scenes "a" and "b" in one chunk file."""
    return saved([chunk_item("a", 0), chunk_item("b", 1)])


def write_split(root: Path, chunk: bytes, index: bytes | None = None) -> Path:
    """A split folder: ``chunk`` as CHUNK, an intact NEIGHBOUR_CHUNK (scene "c"), an index."""
    split = root / "train"
    split.mkdir(parents=True)
    (split / CHUNK).write_bytes(chunk)
    (split / NEIGHBOUR_CHUNK).write_bytes(saved([chunk_item("c", 2)]))
    if index is None:
        index = json.dumps({"a": CHUNK, "b": CHUNK, "c": NEIGHBOUR_CHUNK}).encode()
    (split / INDEX_NAME).write_bytes(index)
    return split


def assert_neighbour_intact(outcome: ReadOutcome) -> None:
    assert "c" in outcome.scenes and "c" not in outcome.undecodable, "an intact chunk was lost"


@st.composite
def chunk_offsets(draw: st.DrawFn, data: bytes) -> int:
    """A byte of a chunk file: first a record of its zip archive (the pickle, a tensor's
    storage, the archive's directory, ...), then a byte inside it. Small records such as
    the pickle get as many draws as the large image storages."""
    starts = sorted(info.header_offset for info in zipfile.ZipFile(io.BytesIO(data)).infolist())
    bounds = list(zip(starts, [*starts[1:], len(data)], strict=True))
    start, end = draw(st.sampled_from(bounds))
    return draw(st.integers(start, end - 1))


@settings(PROPERTY, max_examples=25)
@given(st.data())
def test_truncated_chunk_is_skipped(data: st.DataObject):
    chunk = valid_chunk()
    length = data.draw(st.integers(0, len(chunk) - 1) | chunk_offsets(chunk), label="length")
    with scratch() as root:
        split = write_split(root, chunk[:length])
        streamed, looked_up = stream(root), look_up(split)
    assert streamed.skipped(CHUNK) and not {"a", "b"} & set(streamed.scenes)
    assert_neighbour_intact(streamed)
    assert set(looked_up.scenes) == {"c"} and len(looked_up.errors) == 2  # "a" and "b": one line each


@settings(PROPERTY, max_examples=40)
@given(st.data())
def test_bit_flipped_chunk_reads_or_skips(data: st.DataObject):
    chunk = bytearray(valid_chunk())
    offset = data.draw(chunk_offsets(bytes(chunk)), label="offset")
    chunk[offset] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with scratch() as root:
        split = write_split(root, bytes(chunk))
        streamed, looked_up = stream(root), look_up(split)
    assert_neighbour_intact(streamed)
    assert "c" in looked_up.scenes


def replace(name: str, value: Callable[[dict, int], object]) -> Callable[[dict, int], None]:
    def corrupt(item: dict, frame: int) -> None:
        item[name] = value(item, frame)

    return corrupt


def drop(name: str) -> Callable[[dict, int], None]:
    return lambda item, frame: item.pop(name)


def replace_frame(value: Callable[[Tensor], object]) -> Callable[[dict, int], None]:
    def corrupt(item: dict, frame: int) -> None:
        item["images"][frame] = value(item["images"][frame])

    return corrupt


def with_camera_entry(entry: int, number: float) -> Callable[[dict, int], Tensor]:
    def cameras(item: dict, frame: int) -> Tensor:
        rows = item["cameras"].clone()
        rows[frame, entry] = number
        return rows

    return cameras


# One field of one scene replaced by a wrong type, dtype, shape or value, or removed.
FIELD_CORRUPTIONS: dict[str, Callable[[dict, int], None]] = {
    "key missing": drop("key"),
    "key tensor": replace("key", lambda item, frame: torch.tensor([1, 2])),
    "key None": replace("key", lambda item, frame: None),
    "url tensor": replace("url", lambda item, frame: torch.zeros(2)),
    "url missing": drop("url"),
    "cameras missing": drop("cameras"),
    "cameras string": replace("cameras", lambda item, frame: "not cameras"),
    "cameras nested list": replace("cameras", lambda item, frame: item["cameras"].tolist()),
    "cameras float64": replace("cameras", lambda item, frame: item["cameras"].double()),
    "cameras int64": replace("cameras", lambda item, frame: item["cameras"].long()),
    "cameras bool": replace("cameras", lambda item, frame: item["cameras"] != 0),
    "cameras float16": replace("cameras", lambda item, frame: item["cameras"].half()),
    "cameras 1-D": replace("cameras", lambda item, frame: item["cameras"][frame]),
    "cameras 3-D": replace("cameras", lambda item, frame: item["cameras"][:, :, None]),
    "cameras 17 columns": replace("cameras", lambda item, frame: item["cameras"][:, :17]),
    "cameras one row short": replace("cameras", lambda item, frame: item["cameras"][1:]),
    "cameras no rows": replace("cameras", lambda item, frame: item["cameras"][:0]),
    "cameras zeros (singular)": replace("cameras", lambda item, frame: torch.zeros_like(item["cameras"])),
    "camera singular rotation": replace("cameras", with_camera_entry(6, 0.0)),
    "camera NaN": replace("cameras", with_camera_entry(9, math.nan)),
    "camera inf": replace("cameras", with_camera_entry(12, math.inf)),
    "camera negative focal": replace("cameras", with_camera_entry(0, -0.5)),
    "camera huge": replace("cameras", with_camera_entry(7, 3e38)),
    "images missing": drop("images"),
    "images string": replace("images", lambda item, frame: "not images"),
    "images one tensor": replace("images", lambda item, frame: torch.cat(item["images"])),
    "images one short": replace("images", lambda item, frame: item["images"][1:]),
    "images empty": replace("images", lambda item, frame: []),
    "frame string": replace_frame(lambda image: "not an image"),
    "frame None": replace_frame(lambda image: None),
    "frame float32": replace_frame(lambda image: image.float()),
    "frame int64": replace_frame(lambda image: image.long()),
    "frame 2-D bytes": replace_frame(lambda image: image.reshape(1, -1)),
    "frame empty": replace_frame(lambda image: image[:0]),
    "frame garbage": replace_frame(lambda image: torch.arange(64, dtype=torch.uint8)),
    "frame cut after header": replace_frame(lambda image: image[:60].clone()),
    "frame first half": replace_frame(lambda image: image[: image.numel() // 2].clone()),
    "timestamps missing": drop("timestamps"),
    "timestamps string": replace("timestamps", lambda item, frame: "yesterday"),
    "timestamps 0-D": replace("timestamps", lambda item, frame: torch.tensor(7)),
    "timestamps 2-D": replace("timestamps", lambda item, frame: item["timestamps"][:, None]),
    "timestamps one short": replace("timestamps", lambda item, frame: item["timestamps"][1:]),
    "timestamps float NaN": replace("timestamps", lambda item, frame: torch.full((FRAMES,), math.nan)),
    "item without scene fields": lambda item, frame: (item.clear(), item.update({"not": "a scene"})),
}


def damaged_chunk(corruption: str, victim: int, frame: int) -> tuple[list, str]:
    """Scenes "a" and "b" with one field of scene ``victim`` damaged; returns (chunk, victim key)."""
    items = [chunk_item("a", 0), chunk_item("b", 1)]
    FIELD_CORRUPTIONS[corruption](items[victim], frame)
    return items, "ab"[victim]


@pytest.mark.parametrize("corruption", list(FIELD_CORRUPTIONS))
@settings(PROPERTY, max_examples=2)
@given(victim=st.integers(0, 1), frame=st.integers(0, FRAMES - 1))
def test_wrong_typed_field_skips_only_its_scene(corruption: str, victim: int, frame: int):
    items, key = damaged_chunk(corruption, victim, frame)
    neighbour = "ba"[victim]
    with scratch() as root:
        split = write_split(root, saved(items))
        streamed, looked_up = stream(root), look_up(split)
    # The damaged scene is read (the damage was harmless or only hits its decoding) or is
    # skipped by name (its key, or its position when the key itself is damaged) ...
    assert key in streamed.scenes or streamed.skipped(repr(key)) or streamed.skipped(f"{CHUNK}[{victim}]")
    # ... and its neighbours, in the same chunk or another, are untouched.
    assert neighbour in streamed.scenes and neighbour not in streamed.undecodable
    assert_neighbour_intact(streamed)
    assert {neighbour, "c"} <= set(looked_up.scenes)


CHUNK_CORRUPTIONS: dict[str, object] = {
    "a dict": {"a": chunk_item("a", 0)},
    "a string": "no scenes here",
    "a tensor": torch.zeros(3, 18),
    "None": None,
    "a list of junk": [None, 3, "x", torch.zeros(2), [chunk_item("a", 0)]],
    "numpy cameras": [{**chunk_item("a", 0), "cameras": np.zeros((FRAMES, 18), np.float32)}],
    "empty list": [],
}


@pytest.mark.parametrize("corruption", list(CHUNK_CORRUPTIONS))
def test_wrong_typed_chunk_is_skipped(corruption: str):
    with scratch() as root:
        split = write_split(root, saved(CHUNK_CORRUPTIONS[corruption]))
        streamed, looked_up = stream(root), look_up(split)
    assert set(streamed.scenes) == {"c"} and set(looked_up.scenes) == {"c"}
    assert corruption == "empty list" or streamed.skips


INDEX_DAMAGE = ["truncated", "bit flip", "a list", "a string", "non-string chunk", "unknown chunk", "null"]


@settings(PROPERTY, max_examples=40)
@given(st.sampled_from(INDEX_DAMAGE), st.data())
def test_damaged_index_gives_scenes_or_clear_errors(damage: str, data: st.DataObject):
    index = json.dumps({"a": CHUNK, "b": CHUNK, "c": NEIGHBOUR_CHUNK}).encode()
    if damage == "truncated":
        index = index[: data.draw(st.integers(0, len(index) - 1), label="length")]
    elif damage == "bit flip":
        raw = bytearray(index)
        raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] ^= 1 << data.draw(st.integers(0, 7))
        index = bytes(raw)
    else:
        index = {
            "a list": json.dumps([["a", CHUNK]]),
            "a string": json.dumps(CHUNK),
            "non-string chunk": json.dumps({"a": 0, "c": NEIGHBOUR_CHUNK}),
            "unknown chunk": json.dumps({"a": "999999.torch", "c": NEIGHBOUR_CHUNK}),
            "null": "null",
        }[damage].encode()
    with scratch() as root:
        split = write_split(root, valid_chunk(), index)
        streamed, looked_up = stream(root), look_up(split)
    assert set(streamed.scenes) == {"a", "b", "c"}  # streaming does not need the index
    # Every key the index offers is a scene or one clear error ...
    assert len(looked_up.scenes) + len(looked_up.errors) >= len(looked_up.offered)
    if damage in ("truncated", "a list", "a string", "non-string chunk", "null"):
        # ... an unusable index is ignored with a warning, and the chunks are indexed instead;
        assert looked_up.skipped(INDEX_NAME) and set(looked_up.scenes) == {"a", "b", "c"}
    elif damage == "unknown chunk":
        # ... a wrong entry fails only its own key.
        assert set(looked_up.scenes) == {"c"} and len(looked_up.errors) == 1


# --- nerfstudio scene folders -----------------------------------------------------------------------


def damage_bytes(raw: bytes, data: st.DataObject) -> bytes:
    """Truncate at, or flip one bit of, a hypothesis-chosen byte."""
    offset = data.draw(st.integers(0, len(raw) - 1), label="offset")
    if data.draw(st.booleans(), label="truncate"):
        return raw[:offset]
    damaged = bytearray(raw)
    damaged[offset] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    return bytes(damaged)


def scene_folders(root: Path) -> tuple[Path, Path]:
    """Two nerfstudio scenes: "damaged" (to be damaged) and "intact"."""
    return write_scene_folder(root / "damaged", FRAMES), write_scene_folder(root / "intact", FRAMES, seed=1)


def assert_intact_scene(outcome: ReadOutcome) -> None:
    assert "intact" in outcome.scenes and "intact" not in outcome.undecodable


@settings(PROPERTY, max_examples=40)
@given(st.data())
def test_damaged_transforms_json_skips_its_scene(data: st.DataObject):
    with scratch() as root:
        damaged, _ = scene_folders(root)
        transforms = damaged / "transforms.json"
        raw = transforms.read_bytes()
        transforms.write_bytes(damage_bytes(raw, data))
        truncated = len(transforms.read_bytes()) < len(raw)
        outcome = stream(root)
    assert_intact_scene(outcome)
    # Cut JSON never parses; a flipped bit may leave a readable file (another number, say).
    assert outcome.skipped("'damaged'") if truncated else ("damaged" in outcome.scenes or outcome.skipped("'damaged'"))


TRANSFORMS_CORRUPTIONS: dict[str, Callable[[dict], None]] = {
    "frames a dict": lambda meta: meta.update(frames={"0": meta["frames"][0]}),
    "frames missing": lambda meta: meta.pop("frames"),
    "pose a string": lambda meta: meta["frames"][0].update(transform_matrix="identity"),
    "pose 3x3": lambda meta: meta["frames"][0].update(transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "pose ragged": lambda meta: meta["frames"][0]["transform_matrix"].pop(),
    "pose NaN": lambda meta: meta["frames"][0]["transform_matrix"][0].__setitem__(3, math.nan),
    "focal a string": lambda meta: meta.update(fl_x="wide"),
    "focal zero": lambda meta: meta.update(fl_y=0),
    "width zero": lambda meta: meta.update(w=0),
    "width missing": lambda meta: meta.pop("w"),
    "file_path a number": lambda meta: meta["frames"][0].update(file_path=5),
    "file_path missing file": lambda meta: meta["frames"][0].update(file_path="images/none.png"),
    "fisheye": lambda meta: meta.update(camera_model="OPENCV_FISHEYE"),
    "only frames, null": lambda meta: (meta.clear(), meta.update(frames=None)),
}


@pytest.mark.parametrize("corruption", list(TRANSFORMS_CORRUPTIONS))
def test_wrong_typed_transforms_json_skips_its_scene(corruption: str):
    with scratch() as root:
        damaged, _ = scene_folders(root)
        meta = json.loads((damaged / "transforms.json").read_text())
        TRANSFORMS_CORRUPTIONS[corruption](meta)
        (damaged / "transforms.json").write_text(json.dumps(meta))
        outcome = stream(root)
    assert_intact_scene(outcome)
    assert "damaged" in outcome.scenes or outcome.skipped("'damaged'")


@settings(PROPERTY, max_examples=40)
@given(st.data())
def test_damaged_image_file_fails_only_its_frame(data: st.DataObject):
    frame = data.draw(st.integers(0, FRAMES - 1), label="frame")
    with scratch() as root:
        damaged, _ = scene_folders(root)
        image = damaged / "images" / f"frame_{frame:05d}.png"
        image.write_bytes(damage_bytes(image.read_bytes(), data))
        outcome = stream(root)
    assert_intact_scene(outcome)
    # The scene is listed (its images are read on use); the damaged frame decodes to
    # something or raises ImageDecodeError, and the other frames decode.
    assert "damaged" in outcome.scenes or outcome.skipped("'damaged'")
    assert set(outcome.undecodable.get("damaged", [])) <= {frame}
