"""Two photos in, a nerfstudio scene out: intrinsics, relative pose, scene folder, camera path."""

from pixelsplat_ns.photos.intrinsics import DEFAULT_FOV_DEG, Photo, focal_from_fov, fov_from_focal, read_photo
from pixelsplat_ns.photos.pose import PairPoses, estimate_pair_poses, match_features

__all__ = [
    "DEFAULT_FOV_DEG",
    "PairPoses",
    "Photo",
    "estimate_pair_poses",
    "focal_from_fov",
    "fov_from_focal",
    "match_features",
    "read_photo",
]
