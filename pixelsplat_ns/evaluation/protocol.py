"""The official pixelSplat evaluation protocol: fixed views per scene, 256x256, PSNR/SSIM/LPIPS.

The authors publish, per test scene, which frames are the context pair and which are the
targets (``evaluation_index_re10k.json`` / ``evaluation_index_acid.json``: scene key ->
``{"context": [i, j], "target": [k, ...]}`` or ``null`` for a scene left out). The
published numbers are means over every target of every listed scene, rendered from the
deterministic (top-1 bucket) prediction at 256x256.

Results are written after every scene, atomically, to one JSON file; running again with
the same file resumes where the last run stopped (the file records the checkpoint and the
index it belongs to, and refuses to mix runs).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from pytorch_msssim import ssim
from torch import Tensor

from pixelsplat_ns.data import ExampleConfig, SkipExample, example_from_indices, open_scene_source
from pixelsplat_ns.data.scenes import Scene
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.io import atomic_path
from pixelsplat_ns.metrics import LpipsNet, build_lpips, psnr
from pixelsplat_ns.views import render_views

RESULTS_VERSION = 1
NOT_FOUND = "not found in the data"


class EvaluationIndexError(PixelSplatInputError):
    """The evaluation index file is missing or not in the official format."""


@dataclass(frozen=True)
class ViewChoice:
    context: tuple[int, ...]
    target: tuple[int, ...]


def load_evaluation_index(path: Path) -> dict[str, ViewChoice | None]:
    """Scene key -> view choice (``None``: the scene is left out), validated."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationIndexError(
            f"evaluation index {path} does not exist: place the official evaluation_index_re10k.json / "
            "evaluation_index_acid.json (pixelSplat's assets/ folder) there"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvaluationIndexError(f"evaluation index {path} is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise EvaluationIndexError(
            f"evaluation index {path} must map scene keys to view choices, got {type(raw).__name__}"
        )
    index: dict[str, ViewChoice | None] = {}
    for key, entry in raw.items():
        if entry is None:
            index[key] = None
            continue
        if not isinstance(entry, dict) or not {"context", "target"} <= entry.keys():
            raise EvaluationIndexError(
                f"evaluation index {path}: scene {key!r} needs 'context' and 'target' lists, got {entry!r}"
            )
        context, target = entry["context"], entry["target"]
        valid = all(isinstance(i, int) and i >= 0 for i in [*context, *target])
        if not valid or len(context) < 2 or len(target) < 1:
            raise EvaluationIndexError(
                f"evaluation index {path}: scene {key!r} needs >= 2 context and >= 1 target frame indices "
                f"(non-negative integers), got {entry!r}"
            )
        index[key] = ViewChoice(tuple(context), tuple(target))
    return index


@dataclass
class SceneScores:
    """Per-target scores of one scene."""

    psnr: list[float]
    ssim: list[float]
    lpips: list[float] | None = None

    def to_json(self) -> dict:
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips}


def score_views(
    rendered: Float[Tensor, "view h w 3"], truth: Float[Tensor, "view h w 3"], lpips: torch.nn.Module | None
) -> SceneScores:
    """PSNR, SSIM (11x11 Gaussian window, sigma 1.5, as the official skimage call) and
    LPIPS per view, images in [0, 1]."""
    rendered, truth = rendered.clamp(0, 1), truth.clamp(0, 1)
    as_nchw = [x.permute(0, 3, 1, 2).contiguous() for x in (rendered, truth)]
    ssims = ssim(*as_nchw, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    lpips_values = None
    if lpips is not None:
        lpips_values = [float(lpips(a[None], b[None])) for a, b in zip(*as_nchw, strict=True)]
    return SceneScores(
        psnr=[float(psnr(a, b)) for a, b in zip(rendered, truth, strict=True)],
        ssim=[float(s) for s in ssims],
        lpips=lpips_values,
    )


@dataclass
class EvaluationResults:
    """What one evaluation run has measured so far (the JSON file's content)."""

    checkpoint: str
    index: str
    image_shape: tuple[int, int]
    scenes: dict[str, SceneScores] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # scene -> why

    def summary(self) -> dict[str, float | int | None]:
        """Means over all targets of all evaluated scenes (the published figures' definition)."""
        values: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
        for scores in self.scenes.values():
            values["psnr"] += scores.psnr
            values["ssim"] += scores.ssim
            values["lpips"] += scores.lpips or []
        mean = {name: (sum(v) / len(v) if v else None) for name, v in values.items()}
        if values["lpips"] and len(values["lpips"]) != len(values["psnr"]):
            mean["lpips"] = None  # some scenes were scored without LPIPS: no honest mean
        return {**mean, "scenes": len(self.scenes), "targets": len(values["psnr"]), "skipped": len(self.skipped)}

    def to_json(self) -> dict:
        return {
            "version": RESULTS_VERSION,
            "checkpoint": self.checkpoint,
            "index": self.index,
            "image_shape": list(self.image_shape),
            "summary": self.summary(),
            "scenes": {key: scores.to_json() for key, scores in self.scenes.items()},
            "skipped": self.skipped,
        }

    def save(self, path: Path) -> None:
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def resume_or_start(
        cls, path: Path, checkpoint: str, index: str, image_shape: tuple[int, int]
    ) -> EvaluationResults:
        """The results already in ``path`` if they belong to this run, else a new record."""
        fresh = cls(checkpoint, index, tuple(image_shape))
        if not Path(path).is_file():
            return fresh
        try:
            data = json.loads(Path(path).read_text())
            same = (data["version"], data["checkpoint"], data["index"], tuple(data["image_shape"])) == (
                RESULTS_VERSION, checkpoint, index, tuple(image_shape)
            )  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise PixelSplatInputError(
                f"results file {path} exists but is not an evaluation record ({error}); move it away or choose another --output"
            ) from None
        if not same:
            raise PixelSplatInputError(
                f"results file {path} belongs to another run (checkpoint {data['checkpoint']}, index {data['index']}, "
                f"image shape {data['image_shape']}); choose another --output to start a new evaluation"
            )
        fresh.scenes = {key: SceneScores(**value) for key, value in data["scenes"].items()}
        fresh.skipped = dict(data.get("skipped", {}))
        return fresh


def evaluate_scene(
    encoder: torch.nn.Module,
    scene: Scene,
    views: ViewChoice,
    config: ExampleConfig,
    lpips: torch.nn.Module | None,
    device: str = "cpu",
) -> SceneScores:
    """Predict from the context frames, render the targets, score them. Raises SkipExample
    (with the reason) when the frames do not exist or the cameras cannot form a pair."""
    if max(*views.context, *views.target) >= len(scene):
        raise SkipExample(f"frame indices {views} exceed the scene's {len(scene)} frames")
    example = example_from_indices(scene, torch.tensor(views.context), torch.tensor(views.target), config)
    rendered = render_targets(encoder, example, config.image_shape, device)
    truth = example["target"]["image"].permute(0, 2, 3, 1)
    return score_views(rendered, truth, lpips)


def render_targets(
    encoder: torch.nn.Module, example: dict, image_shape: tuple[int, int], device: str = "cpu"
) -> Float[Tensor, "target h w 3"]:
    """Deterministic prediction from an example's context views (``example_from_indices``),
    rendered into its target views; returned on the CPU."""
    context, target = example["context"], example["target"]
    inputs = [context[name][None].to(device) for name in ("image", "extrinsics", "intrinsics", "near", "far")]
    with torch.inference_mode():
        gaussians = encoder(*inputs, deterministic=True).gaussians
        rendered = render_views(
            gaussians, target["extrinsics"][None].to(device), target["intrinsics"][None].to(device), image_shape
        )[0]
    return rendered.cpu()


def run_evaluation(
    encoder: torch.nn.Module,
    data: Path,
    index_path: Path,
    output: Path,
    checkpoint_name: str,
    image_shape: tuple[int, int] = (256, 256),
    lpips_net: LpipsNet | None = "vgg",
    limit: int | None = None,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationResults:
    """Evaluate ``encoder`` on the scenes of ``data`` (chunk split or scene folders) that
    ``index_path`` lists, writing ``output`` after every scene; resumes a previous run."""
    index = load_evaluation_index(index_path)
    wanted = {key for key, views in index.items() if views is not None}
    results = EvaluationResults.resume_or_start(output, checkpoint_name, Path(index_path).name, image_shape)
    lpips = build_lpips(lpips_net) if lpips_net is not None else None
    if lpips is not None:
        lpips = lpips.to(device)
    config = ExampleConfig(image_shape=tuple(image_shape))
    # Scenes missing from the data last time are looked for again (the data may have grown).
    done = set(results.scenes) | {key for key, why in results.skipped.items() if why != NOT_FOUND}
    evaluated = 0
    for scene in _scenes(open_scene_source(data, split="test"), wanted):
        if scene.key in done:
            continue
        if limit is not None and evaluated >= limit:
            break
        results.skipped.pop(scene.key, None)
        try:
            results.scenes[scene.key] = evaluate_scene(encoder, scene, index[scene.key], config, lpips, device)
        except SkipExample as reason:
            results.skipped[scene.key] = str(reason)
            warnings.warn(f"scene {scene.key} skipped: {reason}", stacklevel=2)
        evaluated += 1
        results.save(output)
        done.add(scene.key)
        if progress is not None:
            progress(scene.key, len(done), len(wanted))
    missing = wanted - done
    if missing and limit is None:
        results.skipped.update({key: NOT_FOUND for key in sorted(missing)})
    results.save(output)
    return results


def _scenes(source, wanted: set[str]) -> Iterator[Scene]:
    for shard in source.shards():
        for scene in source.scenes(shard):
            if scene.key in wanted:
                yield scene


def format_summary(summary: dict) -> str:
    def show(value, digits):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    return (
        f"PSNR {show(summary['psnr'], 2)} dB, SSIM {show(summary['ssim'], 3)}, LPIPS {show(summary['lpips'], 3)} "
        f"over {summary['targets']} targets of {summary['scenes']} scene{'s' * (summary['scenes'] != 1)} "
        f"({summary['skipped']} skipped)"
    )
