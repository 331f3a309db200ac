"""Training examples from scenes, and the IterableDataset that streams them.

An example (a dict, so ``torch.utils.data.default_collate`` batches it) is::

    {
        "context": {"image": [v, 3, h, w] float in [0, 1],
                    "extrinsics": [v, 4, 4] OpenCV camera-to-world (scaled),
                    "intrinsics": [v, 3, 3] normalised,
                    "near": [v], "far": [v], "index": [v] int64 frame indices},
        "target": {the same with t views},
        "scene": str key, "step": int, "scale": float,
    }

Images are resized (Lanczos, corner-aligned) so they cover the training resolution and
centre-cropped to it (training examples optionally zoomed and cropped at a random position,
mirrored and colour-jittered: ``ExampleConfig``), with the intrinsics following exactly. World
translations are multiplied by ``scale`` so the context baseline is 1; near/far follow the official rule
(``cameras.official_near_far``) on the context views and are shared by the targets.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pixelsplat_ns.cameras import denormalize_intrinsics, normalize_intrinsics, official_near_far
from pixelsplat_ns.data.sampling import NotEnoughFrames, Stage, ViewSamplerConfig, example_generator, sample_views
from pixelsplat_ns.data.scenes import DataWarning, ImageDecodeError, Scene, SceneSource, to_tensor


@dataclass
class ExampleConfig(ViewSamplerConfig):
    """Multi-scene training examples: view sampling (inherited fields) and preprocessing."""

    image_shape: tuple[int, int] = (256, 256)
    """Training resolution (height, width): frames are resized to cover it, then centre-cropped."""
    seed: int = 0
    """Seed of the scene order and of every example's randomness (with step, rank and slot)."""
    augment: bool = True
    """Mirror half of the training examples left-right (images, poses and intrinsics), as the reference does."""
    zoom_range: tuple[float, float] = (1.0, 1.0)
    """Training examples are cropped from frames resized to cover ``image_shape`` times a zoom drawn
    log-uniformly from this range (the same for all views of an example, at a random crop
    position), so that the encoder meets scenes at several image scales; (1, 1): centre crops."""
    color_jitter: float = 0.0
    """Training examples' brightness, contrast and saturation are each scaled by a factor drawn from
    [1 - color_jitter, 1 + color_jitter], the same for all views of an example (targets too, so the
    photometric loss compares like with like); 0: off."""
    make_baseline_1: bool = True
    """Scale each example's world so the widest context baseline is 1."""
    baseline_epsilon: float = 1e-3
    """Examples whose context baseline is shorter than this (world units) are skipped."""
    max_fov_deg: float = 100.0
    """Scenes with a wider field of view (degrees, either axis) are skipped."""
    near_disparity: float = 3.0
    """Near plane: depth where the context baseline gives near_disparity * min(h, w) pixels of disparity."""
    far_disparity: float = 0.5
    """Far plane: depth where the context baseline gives this many pixels of disparity."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be positive, got {self.image_shape}")
        if not 1.0 <= self.zoom_range[0] <= self.zoom_range[1]:
            raise ValueError(f"zoom_range must be (low, high) with 1 <= low <= high, got {self.zoom_range}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")

    @classmethod
    def re10k(cls) -> "ExampleConfig":
        """The reference's RealEstate10K training setting (256x256, gap 25 -> 45 over 150k steps)."""
        return cls(
            num_target_views=4,
            min_gap=45,
            max_gap=45,
            initial_min_gap=25,
            initial_max_gap=25,
            warmup_steps=150_000,
        )


class SkipExample(ValueError):
    """This scene cannot give an example now (too short, too wide, no baseline, bad image)."""


def resize_and_crop(
    image: Image.Image,
    intrinsics: Float[Tensor, "3 3"],
    shape: tuple[int, int],
    zoom: float = 1.0,
    position: tuple[float, float] = (0.5, 0.5),
) -> tuple[Float[Tensor, "3 h w"], Float[Tensor, "3 3"]]:
    """Resize ``image`` (Lanczos) to just cover ``shape`` = (h, w) times ``zoom``, then crop
    ``shape`` from it at ``position`` (fractions of the spare rows and columns; the default
    is a centre crop).

    The resize is corner-aligned, so normalised intrinsics are unchanged by it; the crop
    shifts the principal point and rescales by the cropped fraction. Exact: a 3D point
    lands at the same image content before and after. Upscales small frames.
    """
    h_out, w_out = shape
    w_in, h_in = image.size
    factor = max(h_out / h_in, w_out / w_in) * zoom
    h_scaled, w_scaled = max(round(h_in * factor), h_out), max(round(w_in * factor), w_out)
    if (h_scaled, w_scaled) != (h_in, w_in):
        image = image.resize((w_scaled, h_scaled), Image.LANCZOS)
    row, col = round((h_scaled - h_out) * position[0] - 1e-9), round((w_scaled - w_out) * position[1] - 1e-9)
    image = image.crop((col, row, col + w_out, row + h_out))
    k_pixels = denormalize_intrinsics(intrinsics.to(torch.float64), w_scaled, h_scaled)
    k_pixels[0, 2] -= col
    k_pixels[1, 2] -= row
    k = normalize_intrinsics(k_pixels, w_out, h_out).to(intrinsics.dtype)
    return to_tensor(image), k


def mirror_views(views: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mirror views left-right: images flipped, world reflected in x, intrinsics mirrored.

    A point X seen at normalised u becomes the point diag(-1, 1, 1) X seen at 1 - u.
    """
    reflect = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=views["extrinsics"].dtype))
    intrinsics = views["intrinsics"].clone()
    intrinsics[..., 0, 2] = 1 - intrinsics[..., 0, 2]
    intrinsics[..., 0, 1] = -intrinsics[..., 0, 1]
    return {
        **views,
        "image": views["image"].flip(-1),
        "extrinsics": reflect @ views["extrinsics"] @ reflect,
        "intrinsics": intrinsics,
    }


def field_of_view_deg(intrinsics: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 2"]:
    """Horizontal and vertical field of view (degrees) of normalised intrinsics."""
    fx, fy, cx, cy = intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]
    fov_x = torch.atan(cx / fx) + torch.atan((1 - cx) / fx)
    fov_y = torch.atan(cy / fy) + torch.atan((1 - cy) / fy)
    return torch.stack((fov_x, fov_y), dim=-1).rad2deg()


def jitter_colors(
    images: Float[Tensor, "*batch 3 h w"], factors: tuple[float, float, float]
) -> Float[Tensor, "*batch 3 h w"]:
    """Scale brightness, then contrast (about each image's mean grey), then saturation (about
    each pixel's grey) by ``factors``; clamped to [0, 1]."""
    brightness, contrast, saturation = factors
    images = images * brightness
    mean_grey = images.mean(dim=(-3, -2, -1), keepdim=True)
    images = (images - mean_grey) * contrast + mean_grey
    grey = images.mean(dim=-3, keepdim=True)
    return ((images - grey) * saturation + grey).clamp(0, 1)


@dataclass(frozen=True)
class Augmentation:
    """One training example's photometric and crop augmentation (identity by default)."""

    mirror: bool = False
    """Mirror the views left-right (``mirror_views``)."""
    zoom: float = 1.0
    """Resize frames to cover the example's shape times this before cropping."""
    position: tuple[float, float] = (0.5, 0.5)
    """Where the crop lies, as fractions of the spare (rows, columns)."""
    colors: tuple[float, float, float] | None = None
    """Brightness, contrast and saturation factors (``jitter_colors``); None: unchanged."""


def draw_augmentation(config: ExampleConfig, generator: torch.Generator) -> Augmentation:
    """An example's augmentation from ``config``; draws nothing for a disabled one, so examples
    made without zoom or jitter are the same as before those options existed."""
    mirror = config.augment and bool(torch.rand((), generator=generator) < 0.5)
    zoom, position, colors = 1.0, (0.5, 0.5), None
    low, high = config.zoom_range
    if high > 1.0:
        fraction, row, col = torch.rand(3, generator=generator).tolist()
        zoom = math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))  # log-uniform
        position = (row, col)
    if config.color_jitter > 0:
        draws = torch.rand(3, generator=generator) * 2 - 1
        colors = tuple((1 + config.color_jitter * draws).tolist())
    return Augmentation(mirror, zoom, position, colors)


def _load_views(
    scene: Scene,
    indices: Int[Tensor, " view"],
    shape: tuple[int, int],
    zoom: float = 1.0,
    position: tuple[float, float] = (0.5, 0.5),
) -> tuple[Float[Tensor, "view 3 h w"], Float[Tensor, "view 3 3"]]:
    """The frames ``indices`` of ``scene`` resized and cropped (``resize_and_crop``), with their intrinsics."""
    images, intrinsics = [], []
    for index in indices.tolist():
        try:
            pil = scene.images.pil(index)
        except (ImageDecodeError, OSError) as error:
            raise SkipExample(f"frame {index} ({scene.images.name(index)}) cannot be decoded: {error}") from error
        image, k = resize_and_crop(pil, scene.intrinsics[index], shape, zoom, position)
        images.append(image)
        intrinsics.append(k)
    return torch.stack(images), torch.stack(intrinsics)


def make_example(
    scene: Scene,
    config: ExampleConfig,
    step: int,
    rank: int = 0,
    slot: int = 0,
    stage: Stage = "train",
) -> dict:
    """One example from ``scene``; same (scene, config, step, rank, slot, stage) -> same example.

    Raises :class:`SkipExample` (with the reason) when the scene cannot give one.
    """
    generator = example_generator(config.seed, step, rank, slot)
    try:
        context_index, target_index = sample_views(len(scene), config, step, generator, stage)
    except NotEnoughFrames as error:
        raise SkipExample(str(error)) from error
    used = torch.cat((context_index, target_index))
    fov = field_of_view_deg(scene.intrinsics[used])
    if (fov > config.max_fov_deg).any():
        raise SkipExample(f"field of view {fov.max():.1f} deg exceeds max_fov_deg={config.max_fov_deg}")

    augmentation = draw_augmentation(config, generator) if stage == "train" else Augmentation()
    example = example_from_indices(scene, context_index, target_index, config, augmentation=augmentation)
    example["step"] = step
    return example


def example_from_indices(
    scene: Scene,
    context_index: Tensor,
    target_index: Tensor,
    config: ExampleConfig,
    augmentation: Augmentation = Augmentation(),
) -> dict:
    """The example made of the given frames: images resized and cropped to
    ``config.image_shape`` (intrinsics exact), world scaled so the context baseline is 1
    (``make_baseline_1``), near/far from the official rule, then ``augmentation`` (mirror,
    zoomed crop, colours) applied to every view alike. Used by the sampler above and by
    evaluations with fixed view choices. Raises :class:`SkipExample` with the reason.
    """
    extrinsics = scene.extrinsics.to(torch.float32)
    origins = extrinsics[context_index, :3, 3]
    baseline = (origins[:, None] - origins[None]).norm(dim=-1).max().item()
    if baseline < config.baseline_epsilon:
        raise SkipExample(f"context baseline {baseline:.2e} is below baseline_epsilon={config.baseline_epsilon}")
    scale = 1.0 / baseline if config.make_baseline_1 else 1.0

    views = {}
    for name, index in (("context", context_index), ("target", target_index)):
        image, intrinsics = _load_views(scene, index, config.image_shape, augmentation.zoom, augmentation.position)
        if augmentation.colors is not None:
            image = jitter_colors(image, augmentation.colors)
        pose = extrinsics[index].clone()
        pose[:, :3, 3] *= scale
        views[name] = {"image": image, "extrinsics": pose, "intrinsics": intrinsics, "index": index}
    if augmentation.mirror:
        views = {name: mirror_views(value) for name, value in views.items()}

    near, far = official_near_far(
        views["context"]["extrinsics"][None],
        views["context"]["intrinsics"][None],
        config.image_shape,
        config.near_disparity,
        config.far_disparity,
    )
    for value in views.values():
        count = value["index"].shape[0]
        value["near"] = near[0, :1].expand(count).clone()
        value["far"] = far[0, :1].expand(count).clone()
    return {"context": views["context"], "target": views["target"], "scene": scene.key, "scale": scale}


def _generator(*parts: object) -> torch.Generator:
    """A generator seeded by a stable hash of ``parts`` (the same in every process)."""
    digest = hashlib.blake2b("/".join(str(part) for part in parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def distributed_rank_world() -> tuple[int, int] | None:
    """(rank, world size) of the initialised default process group, else None."""
    try:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except (RuntimeError, ValueError):
        pass
    return None


def global_rank_world(local_rank: int, world_size: int) -> tuple[int, int]:
    """(rank, world size) of this process among every machine's processes.

    nerfstudio hands a pipeline its rank on its own machine (``local_rank``); with several
    machines (``--machine.num-machines``) two processes share a local rank, so data shards
    and seeds must use the global rank, which the launcher gave torch.distributed
    (``machine_rank * num_devices + local_rank``). Without a process group: the given pair.
    """
    return distributed_rank_world() or (local_rank, world_size)


class ExampleDataset(IterableDataset):
    """Streams examples from a :class:`SceneSource`, sharded over DDP ranks and workers.

    Readers (``world_size`` ranks x ``num_workers`` dataloader workers each) split the
    source's shards round-robin after a shuffle shared by all of them, so their shares are
    disjoint and together complete, and each reader holds one shard (chunk) in memory at a
    time. With fewer shards than readers, every reader walks all shards and keeps every
    (readers)-th scene instead. ``train`` loops forever (a new shuffle each epoch) and
    samples views at random; ``test`` makes one pass in a fixed order with fixed views.

    The training step of each example is known without shared state: a DataLoader takes
    batch ``b`` from worker ``b % num_workers``, so a worker's k-th example belongs to step
    ``start_step + (k // batch_size) * num_workers + worker`` (one batch per step). Views,
    flips and so on are seeded by (seed, step, rank, slot in the batch).
    """

    def __init__(
        self,
        source: SceneSource,
        config: ExampleConfig,
        stage: Stage = "train",
        batch_size: int = 1,
        start_step: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        self.source = source
        self.config = config
        self.stage: Stage = stage
        self.batch_size = batch_size
        self.start_step = start_step
        self._explicit = None if rank is None else (rank, world_size)
        self._captured = distributed_rank_world()

    def rank_world(self) -> tuple[int, int]:
        """(rank, world size): explicit, else torch.distributed's, else (0, 1)."""
        return self._explicit or distributed_rank_world() or self._captured or (0, 1)

    def reader(self) -> tuple[int, int, int, int]:
        """(rank, world size, worker id, workers per rank) of the calling process."""
        rank, world = self.rank_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def assigned_scenes(self, epoch: int = 0) -> Iterator[Scene]:
        """The scenes this reader handles in ``epoch``, in order (one shard loaded at a time)."""
        rank, world, worker, workers = self.reader()
        part, parts = rank * workers + worker, world * workers
        shards = self.source.shards()
        if self.stage == "train":
            order = torch.randperm(
                len(shards), generator=_generator("shards", self.config.seed, self.start_step, epoch)
            )
            shards = [shards[i] for i in order.tolist()]
        by_shard = len(shards) >= parts
        mine = shards[part::parts] if by_shard else shards
        counter = 0
        for shard in mine:
            scenes = list(self.source.scenes(shard))
            if self.stage == "train":
                order = torch.randperm(len(scenes), generator=_generator("scenes", self.config.seed, epoch, shard))
                scenes = [scenes[i] for i in order.tolist()]
            for scene in scenes:
                keep = by_shard or counter % parts == part
                counter += 1
                if keep:
                    yield scene
            del scenes

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = self.reader()
        count = 0
        epoch = 0
        while True:
            produced = 0
            for scene in self.assigned_scenes(epoch):
                slot = count % self.batch_size
                step = self.start_step + (count // self.batch_size) * workers + worker
                try:
                    example = make_example(scene, self.config, step, rank, slot, self.stage)
                except SkipExample as error:
                    warnings.warn(f"skipping scene {scene.key!r}: {error}", DataWarning, stacklevel=2)
                    continue
                yield example
                count += 1
                produced += 1
            if self.stage != "train":
                return
            if produced == 0:
                raise RuntimeError(
                    f"rank {rank}/{world}, dataloader worker {worker}/{workers}: no usable example in a whole "
                    f"pass over its share of {len(self.source.shards())} shard(s); check the warnings above, "
                    "use fewer workers, or add scenes"
                )
            epoch += 1


def example_loader(
    source: SceneSource,
    config: ExampleConfig,
    batch_size: int,
    num_workers: int = 0,
    stage: Stage = "train",
    start_step: int = 0,
    pin_memory: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """A DataLoader of batched examples (``default_collate``: a leading batch dimension on
    every tensor, ``scene`` a list of keys). Its dataset numbers steps with the same batch
    size, so batch ``b`` is the batch of step ``start_step + b``.
    """
    dataset = ExampleDataset(source, config, stage, batch_size, start_step, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0 and stage == "train",
        pin_memory=pin_memory,
    )
