"""Relative pose of two photos: SIFT matches, essential matrix (RANSAC), cheirality, and a
robust Sampson-error refinement of the rotation, the translation direction and, when it was
guessed, the shared focal length.

Conventions: OpenCV camera axes (x right, y down, z forward); pixel coordinates with pixel
centres at +0.5 (nerfstudio's), principal point at the image centre. The pose maps camera A's
coordinates to camera B's: ``x_b = R @ x_a + t`` with ``|t| = 1`` (camera A at the origin,
baseline 1). ``cameras.py`` turns it into nerfstudio's OpenGL camera-to-world matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from pixelsplat_ns.cameras import opencv_keypoints_to_pixels
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.photos.intrinsics import (
    DEFAULT_FOV_DEG,
    Photo,
    bring_to_common_size,
    focal_from_fov,
    fov_from_focal,
    read_photo,
)

MIN_INLIERS = 20
"""Fewer matches than this consistent with one relative pose: the photos are refused."""
MIN_PARALLAX_PX = 0.5
"""The photos count as taken from one place when the best pure rotation (no baseline) leaves a
median residual under this many matching pixels, or under ``MIN_PARALLAX_RATIO`` times the
median Sampson error of the pose (the matches' noise): no parallax to triangulate from."""
MIN_PARALLAX_RATIO = 3.0
MATCH_LONG_SIDE = 1200
"""Photos are matched at most at this long side (keypoints are mapped back to full resolution)."""
RATIO = 0.8
"""Lowe's ratio test."""
THRESHOLD_PX = 1.0
"""RANSAC inlier threshold, in matching pixels."""
FOV_RANGE_DEG = (20.0, 100.0)
"""Horizontal fields of view searched when the focal length is guessed."""

ImageInput = str | Path | np.ndarray | Photo


@dataclass
class PairPoses:
    """The relative pose of photo B with respect to photo A, and the intrinsics it was found with."""

    rotation: np.ndarray
    """[3, 3] R: camera A -> camera B coordinates (OpenCV axes), ``x_b = R x_a + t``."""
    translation: np.ndarray
    """[3] unit t; camera B's centre in A's coordinates is ``-R.T @ t``."""
    focal_px: tuple[float, float]
    """Focal length (pixels) of A and of B, at ``image_size``."""
    image_size: tuple[int, int]
    """(width, height) of both photos as used (after any resize)."""
    focal_source: str
    """Where the focal length came from (EXIF tag, the user's value, the default field of view)."""
    focal_refined: bool
    """True when a guessed focal length was refined from the matches."""
    num_matches: int
    """Matches kept by the ratio test (and the mutual check)."""
    num_inliers: int
    """Matches consistent with the pose (Sampson error under the threshold, points in front)."""
    median_parallax_deg: float
    """Median triangulation angle of the inliers."""
    median_sampson_px: float
    """Median Sampson error of the inliers, in pixels."""
    rotation_only_px: float
    """Median residual (matching pixels) left when the best pure rotation (no baseline) is fitted
    to the inliers: the parallax the depth comes from."""
    notes: list[str] = field(default_factory=list)
    """What was done to the input on the way (resizes)."""
    images: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    """The two RGB uint8 photos as used (EXIF orientation applied, common size)."""

    @property
    def principal_point(self) -> tuple[float, float]:
        return self.image_size[0] / 2, self.image_size[1] / 2

    def intrinsics(self, view: int) -> np.ndarray:
        """Pixel intrinsics K (3x3) of view 0 (A) or 1 (B)."""
        cx, cy = self.principal_point
        f = self.focal_px[view]
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)

    @property
    def fov_deg(self) -> tuple[float, float]:
        """Horizontal field of view of A and of B, degrees."""
        return tuple(fov_from_focal(f, self.image_size[0]) for f in self.focal_px)

    def c2w_opencv(self) -> np.ndarray:
        """[2, 4, 4] OpenCV camera-to-world matrices: A at the origin, B one unit away."""
        poses = np.tile(np.eye(4), (2, 1, 1))
        poses[1, :3, :3] = self.rotation.T
        poses[1, :3, 3] = -self.rotation.T @ self.translation
        return poses


# --- matching ---------------------------------------------------------------------------------


def _grey(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    factor = min(1.0, long_side / max(grey.shape))
    if factor < 1.0:
        size = (max(1, round(grey.shape[1] * factor)), max(1, round(grey.shape[0] * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey, factor


def match_features(
    image_a: np.ndarray, image_b: np.ndarray, long_side: int = MATCH_LONG_SIDE, ratio: float = RATIO
) -> tuple[np.ndarray, np.ndarray, float]:
    """SIFT matches that pass Lowe's ratio test both ways (mutual). Returns the matched points in
    each photo's full-resolution pixel coordinates ([n, 2], pixel centres at +0.5) and the
    matching scale (matching pixels per photo pixel)."""
    sift = cv2.SIFT_create(nfeatures=8000, contrastThreshold=0.01)
    grey_a, factor = _grey(image_a, long_side)
    grey_b, factor_b = _grey(image_b, long_side)
    keys_a, desc_a = sift.detectAndCompute(grey_a, None)
    keys_b, desc_b = sift.detectAndCompute(grey_b, None)
    if desc_a is None or desc_b is None or len(keys_a) < 2 or len(keys_b) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2)), factor
    matcher = cv2.BFMatcher(cv2.NORM_L2)

    def one_way(query, train):
        kept = {}
        for pair in matcher.knnMatch(query, train, k=2):
            if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
                kept[pair[0].queryIdx] = pair[0].trainIdx
        return kept

    forward, backward = one_way(desc_a, desc_b), one_way(desc_b, desc_a)
    pairs = [(i, j) for i, j in forward.items() if backward.get(j) == i]
    points_a = np.array([keys_a[i].pt for i, _ in pairs], dtype=np.float64).reshape(-1, 2)
    points_b = np.array([keys_b[j].pt for _, j in pairs], dtype=np.float64).reshape(-1, 2)
    points_a, points_b = (opencv_keypoints_to_pixels(torch.from_numpy(p)).numpy() for p in (points_a, points_b))
    return points_a / factor, points_b / factor_b, factor  # back to full resolution


# --- geometry ---------------------------------------------------------------------------------


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _bearings(points: np.ndarray, focal: float, centre: np.ndarray) -> np.ndarray:
    """Unit rays (OpenCV camera axes) through pixel points."""
    rays = np.concatenate(((points - centre) / focal, np.ones((len(points), 1))), axis=1)
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def sampson_px(
    rotation: np.ndarray,
    translation: np.ndarray,
    focal_a: float,
    focal_b: float,
    centred_a: np.ndarray,
    centred_b: np.ndarray,
) -> np.ndarray:
    """Sampson distances (pixels) of matches (pixel coordinates relative to the principal point)
    to the epipolar geometry of (R, t) with the given focal lengths."""
    k_a_inv = np.diag([1 / focal_a, 1 / focal_a, 1.0])
    k_b_inv = np.diag([1 / focal_b, 1 / focal_b, 1.0])
    fundamental = k_b_inv.T @ _skew(translation) @ rotation @ k_a_inv
    xa = np.concatenate((centred_a, np.ones((len(centred_a), 1))), axis=1)
    xb = np.concatenate((centred_b, np.ones((len(centred_b), 1))), axis=1)
    fa = xa @ fundamental.T  # F x_a
    fb = xb @ fundamental  # F^T x_b
    numerator = np.einsum("ij,ij->i", xb, fa)
    denominator = np.sqrt(fa[:, 0] ** 2 + fa[:, 1] ** 2 + fb[:, 0] ** 2 + fb[:, 1] ** 2) + 1e-12
    return numerator / denominator


def _essential_pose(
    centred_a: np.ndarray, centred_b: np.ndarray, focal_a: float, focal_b: float, threshold_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """RANSAC essential matrix + cheirality: (R, t, inlier mask), or None when it fails."""
    norm_a = centred_a / focal_a
    norm_b = centred_b / focal_b
    threshold = threshold_px / math.sqrt(focal_a * focal_b)
    cv2.setRNGSeed(0)
    essential, mask = cv2.findEssentialMat(
        norm_a, norm_b, np.eye(3), method=cv2.USAC_ACCURATE, prob=0.9999, threshold=threshold, maxIters=5000
    )
    if essential is None or mask is None or essential.shape[0] < 3:
        return None
    essential = essential[:3]
    mask = mask.ravel().astype(np.uint8)
    # OpenCV's default distanceThresh (50 baselines) would drop every point of a distant scene.
    _, rotation, translation, pose_mask, _ = cv2.recoverPose(
        essential, norm_a, norm_b, np.eye(3), distanceThresh=1e9, mask=mask.copy()
    )
    inliers = pose_mask.ravel() > 0
    return rotation, translation.ravel() / np.linalg.norm(translation), inliers


def _truncated_cost(residuals: np.ndarray, threshold: float) -> float:
    return float(np.minimum(residuals**2, threshold**2).sum())


def _refine(
    rotation: np.ndarray,
    translation: np.ndarray,
    focal_a: float,
    focal_b: float,
    centred_a: np.ndarray,
    centred_b: np.ndarray,
    threshold_px: float,
    refine_focal: bool,
    focal_prior: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Robust (Cauchy) least squares on Sampson distances: rotation, translation direction and,
    with ``refine_focal``, one scale applied to both focal lengths (a weak log-prior pulls it
    towards ``focal_prior`` where the matches leave it undetermined)."""
    helper = np.eye(3)[np.argmin(np.abs(translation))]
    u = np.cross(translation, helper)
    u /= np.linalg.norm(u)
    v = np.cross(translation, u)
    prior_weight = 0.02 * math.sqrt(len(centred_a)) * threshold_px

    def unpack(params):
        rot = Rotation.from_rotvec(params[:3]).as_matrix() @ rotation
        direction = translation + params[3] * u + params[4] * v
        scale = math.exp(params[5]) if refine_focal else 1.0
        return rot, direction / np.linalg.norm(direction), focal_a * scale, focal_b * scale

    def residuals(params):
        rot, direction, fa, fb = unpack(params)
        r = sampson_px(rot, direction, fa, fb, centred_a, centred_b)
        if refine_focal and focal_prior is not None:
            r = np.append(r, prior_weight * math.log(fa / focal_prior))
        return r

    start = np.zeros(6)
    result = least_squares(
        lambda p: residuals(np.concatenate((p, [0.0])) if not refine_focal else p),
        start if refine_focal else start[:5],
        loss="cauchy",
        f_scale=threshold_px,
        max_nfev=200,
    )
    params = result.x if refine_focal else np.concatenate((result.x, [0.0]))
    return unpack(params)


def _rotation_only_residual_deg(bearings_a: np.ndarray, bearings_b: np.ndarray) -> float:
    """Median angle between B's rays and A's rays turned by the best pure rotation (Kabsch)."""
    u, _, vt = np.linalg.svd(bearings_b.T @ bearings_a)
    rotation = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    cosine = np.einsum("ij,ij->i", bearings_b, bearings_a @ rotation.T).clip(-1, 1)
    return float(np.degrees(np.median(np.arccos(cosine))))


def _triangulation_angles_deg(
    rotation: np.ndarray, translation: np.ndarray, bearings_a: np.ndarray, bearings_b: np.ndarray
) -> np.ndarray:
    """Angle between the two rays of each match at the point where they (nearly) meet."""
    rays_b_in_a = bearings_b @ rotation  # R^T b, in A's axes
    cosine = np.einsum("ij,ij->i", bearings_a, rays_b_in_a).clip(-1, 1)
    return np.degrees(np.arccos(cosine))


# --- the estimate -----------------------------------------------------------------------------


def _rotation_only_px(
    points_a: np.ndarray,
    points_b: np.ndarray,
    focal_a: float,
    focal_b: float,
    centre: np.ndarray,
    width: int,
    search_focal: bool,
    scale: float,
) -> float:
    """Median residual (matching pixels) of the best pure rotation between the matches; with
    ``search_focal``, also over focal lengths of 20-100 degree fields of view."""
    mean_focal = math.sqrt(focal_a * focal_b)
    focals = [mean_focal]
    if search_focal:
        focals += [focal_from_fov(float(fov), width) for fov in np.geomspace(*FOV_RANGE_DEG, 33)]
    best = min(
        _rotation_only_residual_deg(
            _bearings(points_a, f * focal_a / mean_focal, centre), _bearings(points_b, f * focal_b / mean_focal, centre)
        )
        for f in focals
    )
    return math.tan(math.radians(best)) * mean_focal * scale


def _refuse_without_baseline(
    points_a: np.ndarray,
    points_b: np.ndarray,
    focal_a: float,
    focal_b: float,
    centre: np.ndarray,
    width: int,
    search_focal: bool,
    scale: float,
) -> None:
    """Before any pose: refuse matches that a homography explains and a pure rotation explains
    to under ``MIN_PARALLAX_PX`` (the same photo twice, a camera turned on a tripod)."""
    _, mask = cv2.findHomography(points_a, points_b, cv2.RANSAC, THRESHOLD_PX / scale)
    if mask is None:
        return
    kept = mask.ravel() > 0
    if kept.sum() < max(MIN_INLIERS, 0.8 * len(points_a)):
        return
    residual = _rotation_only_px(points_a[kept], points_b[kept], focal_a, focal_b, centre, width, search_focal, scale)
    if residual < MIN_PARALLAX_PX:
        raise PixelSplatInputError(
            "the two photos were taken from the same place: no depth can be recovered "
            f"(a pure camera rotation explains {int(kept.sum())} of their {len(points_a)} matches to "
            f"{residual:.2f} pixels); step sideways between the two shots"
        )


def _as_photo(image: ImageInput, name: str) -> Photo:
    if isinstance(image, Photo):
        return image
    if isinstance(image, (str, Path)):
        return read_photo(Path(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise PixelSplatInputError(f"{name} must be an [h, w, 3] RGB image, got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    return Photo(Path(name), np.ascontiguousarray(array[..., :3]), None, None)


def _initial_focal(
    a: Photo, b: Photo, focal_px: float | None, fov_deg: float | None
) -> tuple[tuple[float, float], str, bool]:
    """(focal of A, focal of B), where they came from, and whether they are a guess."""
    width = a.size[0]
    if focal_px is not None and fov_deg is not None:
        raise PixelSplatInputError("give the focal length (focal_px) or the field of view (fov_deg), not both")
    if a.exif_focal_px is not None and b.exif_focal_px is not None:
        source = (
            a.exif_focal_source
            if a.exif_focal_source == b.exif_focal_source
            else (f"{a.exif_focal_source} (A), {b.exif_focal_source} (B)")
        )
        return (a.exif_focal_px, b.exif_focal_px), source, False
    for known in (a, b):
        if known.exif_focal_px is not None:
            return (known.exif_focal_px,) * 2, f"{known.exif_focal_source} of {known.path.name} (used for both)", False
    if focal_px is not None:
        if not (math.isfinite(focal_px) and focal_px > 0):
            raise PixelSplatInputError(f"the focal length must be a positive number of pixels, got {focal_px}")
        return (focal_px, focal_px), f"given: {focal_px:g} px", False
    if fov_deg is not None:
        if not (math.isfinite(fov_deg) and 1 <= fov_deg <= 179):
            raise PixelSplatInputError(f"the horizontal field of view must be between 1 and 179 degrees, got {fov_deg}")
        focal = focal_from_fov(fov_deg, width)
        return (focal, focal), f"given: {fov_deg:g} degrees horizontal field of view", False
    focal = focal_from_fov(DEFAULT_FOV_DEG, width)
    return (
        (focal, focal),
        f"no EXIF focal length: guessed from a {DEFAULT_FOV_DEG:g} degree horizontal field of view",
        True,
    )


def estimate_pair_poses(
    image_a: ImageInput,
    image_b: ImageInput,
    focal_px: float | None = None,
    fov_deg: float | None = None,
    refine_focal: bool | None = None,
) -> PairPoses:
    """Relative pose of photo B with respect to photo A (paths, RGB arrays or ``Photo``s).

    Focal length: the photos' EXIF when present, else ``focal_px`` or ``fov_deg`` (horizontal,
    degrees), else a 60 degree field of view, refined from the matches (``refine_focal`` forces
    refinement on or off). Principal point at the image centre. Raises ``PixelSplatInputError``
    with one line when the photos cannot give a pose: too few shared matches, no baseline (same
    place, pure rotation), unreadable images, different shapes."""
    a, b = _as_photo(image_a, "image A"), _as_photo(image_b, "image B")
    a, b, note = bring_to_common_size(a, b)
    notes = [note] if note else []
    (focal_a, focal_b), source, guessed = _initial_focal(a, b, focal_px, fov_deg)
    refine = guessed if refine_focal is None else refine_focal
    width, height = a.size
    centre = np.array([width / 2, height / 2])

    points_a, points_b, scale = match_features(a.image, b.image)
    threshold = THRESHOLD_PX / scale  # in photo pixels
    minimum = MIN_INLIERS
    if len(points_a) < minimum:
        raise PixelSplatInputError(
            f"the two photos share too little: {len(points_a)} matches (at least {minimum} are needed); "
            "take them of the same subject with more overlap"
        )
    centred_a, centred_b = points_a - centre, points_b - centre
    _refuse_without_baseline(points_a, points_b, focal_a, focal_b, centre, width, refine, scale)

    def fit(fa: float, fb: float):
        found = _essential_pose(centred_a, centred_b, fa, fb, threshold)
        if found is None:
            return None
        rotation, translation, inliers = found
        cost = _truncated_cost(sampson_px(rotation, translation, fa, fb, centred_a, centred_b), 2 * threshold)
        return cost, rotation, translation, inliers, fa, fb

    if refine:
        candidates = []
        for fov in np.geomspace(*FOV_RANGE_DEG, 17):
            focal = focal_from_fov(float(fov), width)
            found = fit(focal, focal)
            if found is not None:
                candidates.append(found)
        candidates.sort(key=lambda c: c[0])
        best = None
        for _, rotation, translation, inliers, fa, fb in candidates[:3]:
            if inliers.sum() < 8:
                continue
            refined = _refine(
                rotation, translation, fa, fb, centred_a[inliers], centred_b[inliers], threshold, True, focal_a
            )
            cost = _truncated_cost(sampson_px(*refined, centred_a, centred_b), 2 * threshold)
            if best is None or cost < best[0]:
                best = (cost, *refined)
        if best is None:
            raise PixelSplatInputError(
                f"the two photos share too little: {len(points_a)} matches, none consistent with one camera motion"
            )
        _, rotation, translation, focal_a, focal_b = best
    else:
        found = fit(focal_a, focal_b)
        if found is None:
            raise PixelSplatInputError(
                f"the two photos share too little: {len(points_a)} matches, none consistent with one camera motion"
            )
        _, rotation, translation, inliers, _, _ = found
        if inliers.sum() >= 8:
            rotation, translation, _, _ = _refine(
                rotation, translation, focal_a, focal_b, centred_a[inliers], centred_b[inliers], threshold, False
            )

    # Final inliers: small Sampson error and in front of both cameras.
    distances = np.abs(sampson_px(rotation, translation, focal_a, focal_b, centred_a, centred_b))
    bearings_a = _bearings(points_a, focal_a, centre)
    bearings_b = _bearings(points_b, focal_b, centre)
    inliers = distances < 2 * threshold
    # Points in front of both cameras: depths along a and R^T b where the two rays pass closest.
    rays_b = bearings_b @ rotation
    centre_b = -rotation.T @ translation
    depth_pairs = np.einsum("nij,j->ni", np.linalg.pinv(np.stack((bearings_a, -rays_b), axis=2)), centre_b)
    inliers &= (depth_pairs > 0).all(axis=1)
    count = int(inliers.sum())
    if count < minimum:
        raise PixelSplatInputError(
            f"the two photos share too little: {count} matches agree on one camera motion "
            f"({len(points_a)} candidates; at least {minimum} are needed); take them of the same subject with more overlap"
        )

    # No baseline: a pure rotation explains the matches (for some focal length when it is a guess)
    # about as well as the pose with a baseline does.
    # (At the pose's focal length: searching it here would let a wrong focal absorb real parallax.)
    rotation_only_px = _rotation_only_px(
        points_a[inliers], points_b[inliers], focal_a, focal_b, centre, width, False, scale
    )
    noise_px = float(np.median(distances[inliers])) * scale
    angles = _triangulation_angles_deg(rotation, translation, bearings_a[inliers], bearings_b[inliers])
    parallax = float(np.median(angles))
    if rotation_only_px < max(MIN_PARALLAX_PX, MIN_PARALLAX_RATIO * noise_px):
        raise PixelSplatInputError(
            "the two photos were taken from the same place: no depth can be recovered "
            f"(a pure camera rotation explains their {count} matches to {rotation_only_px:.2f} pixels, "
            f"their noise is {noise_px:.2f}); step sideways between the two shots"
        )
    return PairPoses(
        rotation=rotation,
        translation=translation,
        focal_px=(float(focal_a), float(focal_b)),
        image_size=(width, height),
        focal_source=source + (", refined from the matches" if refine else ""),
        focal_refined=refine,
        num_matches=len(points_a),
        num_inliers=count,
        median_parallax_deg=parallax,
        median_sampson_px=float(np.median(distances[inliers])),
        rotation_only_px=rotation_only_px,
        notes=notes,
        images=(a.image, b.image),
    )
