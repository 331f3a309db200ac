"""Fine-tuning starts (prediction, its points or splatfacto's random cube) and their refinement, through ns-train."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F

from pixelsplat_ns.finetune.starts import (
    RefinementStrategy,
    random_cube_params,
    refinement_strategy,
    sample_points,
    seed_point_params,
    seed_spreads,
    spread_along_rays,
)
from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
from tests.scenes import cut_scene


def test_random_start_is_splatfacto_random_cube():
    params = random_cube_params(2000, 10.0, sh_degree=3, seed=7)
    assert params["means"].shape == (2000, 3)
    assert params["means"].abs().max() <= 5.0 and params["means"].abs().max() > 4.5  # fills the cube of side 10
    torch.testing.assert_close(params["opacities"].sigmoid(), torch.full((2000, 1), 0.1))
    assert params["features_rest"].shape == (2000, 15, 3) and not params["features_rest"].any()
    # Each Gaussian is as wide as the mean distance to its three nearest neighbours: for 2000
    # uniform points in a cube of side 10 that is about 0.55 (Poisson: 0.55 * (1000 / 2000) ** (1/3) * 10 / 4.4).
    scales = params["scales"].exp()
    assert torch.equal(scales[:, 0], scales[:, 1]) and torch.equal(scales[:, 1], scales[:, 2])
    assert 0.4 < scales.median() < 0.8
    again = random_cube_params(2000, 10.0, sh_degree=3, seed=7)
    assert all(torch.equal(params[name], again[name]) for name in params)
    with pytest.raises(ValueError, match="at least 4"):
        random_cube_params(3, 10.0, sh_degree=0)


def test_seeded_points_are_splatfacto_s_seeding_with_their_colours():
    means = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    colours = torch.rand(5, 3)
    params = seed_point_params(means, colours, sh_degree=1, seed=3)
    torch.testing.assert_close(params["opacities"].sigmoid(), torch.full((5, 1), 0.1))
    torch.testing.assert_close(params["quats"].norm(dim=-1), torch.ones(5))  # unit, seeded
    assert torch.equal(params["quats"], seed_point_params(means, colours, 1, seed=3)["quats"])
    assert not torch.equal(params["quats"], seed_point_params(means, colours, 1, seed=4)["quats"])
    assert params["features_rest"].shape == (5, 3, 3) and not params["features_rest"].any()
    # The origin's three nearest neighbours are all 1 away.
    torch.testing.assert_close(params["scales"][0].exp(), torch.ones(3))
    chosen = sample_points(3, 10, seed=3)
    assert chosen.unique().numel() == 3 and torch.equal(chosen, sample_points(3, 10, seed=3))
    assert sample_points(20, 10).sort().values.tolist() == list(range(10))  # all when fewer


def _toy_gaussians(n: int) -> tuple[torch.nn.ParameterDict, dict[str, torch.optim.Optimizer]]:
    params = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.randn(n, 3)),
            "scales": torch.nn.Parameter(torch.full((n, 3), -5.0)),  # small: grown ones are duplicated
            "quats": torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)),
            "features_dc": torch.nn.Parameter(torch.rand(n, 3)),
            "features_rest": torch.nn.Parameter(torch.zeros(n, 15, 3)),
            "opacities": torch.nn.Parameter(torch.logit(torch.full((n, 1), 0.9))),
        }
    )
    return params, {name: torch.optim.Adam([p], lr=1e-3) for name, p in params.items()}


def _info(n: int, grads: torch.Tensor) -> dict:
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = grads[None]
    return {
        "means2d": means2d,
        "width": 100,
        "height": 100,
        "n_cameras": 1,
        "radii": torch.full((1, n), 3),
        "gaussian_ids": None,
    }


def test_spread_moves_each_point_along_its_ray_by_at_most_the_factor_either_way():
    generator = torch.Generator().manual_seed(3)
    origins = torch.randn(4000, 3, generator=generator)
    points = origins + torch.randn(4000, 3, generator=generator)
    moved = spread_along_rays(points, origins, 3.0, seed=5)
    ratio = (moved - origins).norm(dim=-1) / (points - origins).norm(dim=-1)
    torch.testing.assert_close(moved - origins, (points - origins) * ratio[:, None])  # same ray, same side
    assert 1 / 3 - 1e-5 <= ratio.min() < 0.35 and 2.9 < ratio.max() <= 3 + 1e-5
    logs = ratio.log() / torch.log(torch.tensor(3.0))  # log-uniform in [-1, 1]: quartiles near -0.5, 0, 0.5
    torch.testing.assert_close(logs.quantile(torch.tensor([0.25, 0.5, 0.75])), torch.tensor([-0.5, 0.0, 0.5]),
                               atol=0.05, rtol=0)  # fmt: skip
    assert torch.equal(moved, spread_along_rays(points, origins, 3.0, seed=5))  # seeded
    assert not torch.equal(moved, spread_along_rays(points, origins, 3.0, seed=6))
    torch.testing.assert_close(spread_along_rays(points, origins, 1.0), points)  # 1: unmoved
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite factor of at least 1"):
            spread_along_rays(points, origins, bad)
    # A spread per point: each within its own.
    spreads = torch.linspace(1.0, 4.0, 4000)
    ratio = (spread_along_rays(points, origins, spreads) - origins).norm(dim=-1) / (points - origins).norm(dim=-1)
    assert ((ratio >= 1 / spreads - 1e-5) & (ratio <= spreads + 1e-5)).all() and ratio[-400:].max() > 3.5


def test_a_seed_s_spread_is_the_other_view_s_disagreement_within_bounds():
    disagreement = torch.tensor([1.0, 1.2, 1.7, 2.5, float("inf")])
    spreads = seed_spreads(disagreement, 1.5, 2.0)
    torch.testing.assert_close(spreads, torch.tensor([1.5, 1.5, 1.7, 2.0, 2.0]))  # unseen by the other: the most


def test_refinement_keeps_a_predictions_opacities_and_carries_source_pixels():
    config = pixelsplat_trainer_config().pipeline.model
    config.warmup_length, config.refine_every = 1, 2
    strategy = refinement_strategy(config, num_train_data=4, splatfacto_start=False)
    assert strategy.prune_opa == 1 / 255  # a prediction's faint Gaussians are a blend: only invisible ones go
    assert isinstance(strategy, RefinementStrategy)
    n = 10
    params, optimizers = _toy_gaussians(n)
    state = strategy.initialize_state(scene_scale=1.0)
    state["gaussian_pixels"] = torch.arange(n)[:, None].repeat(1, 3)
    grads = torch.zeros(n, 2)
    grads[:3] = 1.0  # three Gaussians with a large screen-space gradient
    # gsplat resets every opacity to 2 * cull_alpha_thresh at step 0; a prediction keeps them.
    strategy.step_post_backward(params, optimizers, state, step=0, info=_info(n, grads))
    torch.testing.assert_close(params["opacities"].sigmoid(), torch.full((n, 1), 0.9))
    strategy.step_post_backward(params, optimizers, state, step=2, info=_info(n, grads))
    assert params["means"].shape[0] == n + 3  # the three were duplicated (small scales)
    assert state["gaussian_pixels"].shape[0] == n + 3
    assert state["gaussian_pixels"][n:, 0].tolist() == [0, 1, 2]  # copies remember their source pixels
    assert optimizers["means"].param_groups[0]["params"][0] is params["means"]
    # A random start keeps splatfacto's schedule, opacity reset included.
    random = refinement_strategy(config, 4, splatfacto_start=True)
    assert random.reset_every == config.reset_alpha_every * 2 and random.prune_opa == 0.1


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return cut_scene("pavilion-chair-midday", tmp_path_factory.mktemp("scene"), train=[40, 41, 45, 46], eval_=[43])


def _config(scene, output, steps: int, **model):
    """``ns-train pixelsplat`` on the chair scene's window for ``steps`` iterations, model fields as given."""
    config = pixelsplat_trainer_config()
    config.data, config.output_dir, config.vis = scene, output, "tensorboard"
    config.max_num_iterations = steps
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = ("frame_00040_train", "frame_00045_train")
    config.pipeline.model.encoder_long_side = 160
    for name, value in model.items():
        setattr(config.pipeline.model, name, value)
    config.set_timestamp()
    return config


def _train(scene, output, steps: int = 6, **model) -> torch.nn.Module:
    from nerfstudio.scripts.train import main as train_main
    from nerfstudio.utils.eval_utils import eval_setup

    from pixelsplat_ns.nerfstudio.trainer import close_event_writers

    config = _config(scene, output, steps, **model)
    config.viewer.quit_on_train_completion = True
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(config)
        close_event_writers()
        _, pipeline, _, _ = eval_setup(config.get_base_dir() / "config.yml", test_mode="test")
    return pipeline.model


def test_ns_train_random_start_densifies_from_splatfacto_cube(scene, tmp_path):
    # splatfacto pauses refinement for (training views + refine-every) steps after each opacity reset, step 0's too
    model = _train(scene, tmp_path, steps=10, initialization="random", num_random=3000, warmup_length=1, refine_every=2)
    assert isinstance(model.strategy, RefinementStrategy) and model.strategy.prune_opa == 0.1
    assert model.refining and model.means.shape[0] != 3000  # refined: split, duplicated or pruned
    assert model.gaussian_pixels.shape[0] == 0  # from no pixel: the walkthrough's picking says so
    assert model.sh_degree_to_use() == 0  # reloaded, it renders with the bands it was trained with
    model.train()
    assert model.sh_degree_to_use() == 0  # splatfacto's schedule: one band per 1000 steps


def test_ns_train_prediction_start_refines_on_request_and_keeps_source_pixels(scene, tmp_path):
    predicted = _train(scene, tmp_path / "start", steps=0, gaussian_resolution="native").means.shape[0]
    model = _train(
        scene, tmp_path, gaussian_resolution="native", refine=True, warmup_length=1, refine_every=2,
        densify_grad_thresh=1e-6,
    )  # fmt: skip
    assert model.means.shape[0] > predicted  # densified
    assert model.gaussian_pixels.shape[0] == model.means.shape[0]
    assert model.sh_degree_to_use() == 1  # the degree it was fine-tuned at: two-view colours start at 1 (6 steps)


def test_fine_tuning_starts_from_the_encoder_gaussians_unless_told(scene, tmp_path):
    feed_forward = _train(scene, tmp_path / "feed-forward", steps=0)
    assert feed_forward.config.gaussian_resolution == "native"  # resolved before config.yml was written
    encoder = _train(scene, tmp_path / "encoder", steps=0, gaussian_resolution="encoder").means.shape[0]
    fine_tuned = _train(scene, tmp_path / "fine-tuned", steps=2)
    assert fine_tuned.config.gaussian_resolution == "encoder"
    assert fine_tuned.config.depth_sweep and not feed_forward.config.depth_sweep  # resolved by the run too
    # The encoder's Gaussians, less the few the depth sweep moved in front of their camera's near plane.
    assert encoder - 0.01 * encoder < fine_tuned.means.shape[0] <= encoder < feed_forward.means.shape[0] / 4
    assert fine_tuned.sh_degree_to_use() == 0  # one colour per Gaussian: no two-view band
    told = _train(scene, tmp_path / "told", steps=2, gaussian_resolution="native")
    assert told.means.shape[0] == feed_forward.means.shape[0]
    random = _train(scene, tmp_path / "random", steps=2, initialization="random", num_random=1000)
    assert random.config.gaussian_resolution == "native"  # the random start predicts nothing


def test_the_depth_sweep_moves_each_predicted_gaussian_along_its_own_ray(scene, tmp_path):
    """The swept prediction is the encoder's Gaussians, each on its camera's ray at between half and twice its
    predicted distance, as large as before on its own camera's photo; the chair's window has depths to move."""
    plain = _train(scene, tmp_path / "plain", steps=0, gaussian_resolution="encoder")
    assert plain.config.depth_sweep is False  # a feed-forward run's default
    swept = _train(scene, tmp_path / "swept", steps=0, gaussian_resolution="encoder", depth_sweep=True)
    # The same Gaussians, less the few moved in front of their camera's near plane.
    key = torch.tensor([1_000_000, 1000, 1])
    kept = torch.isin(plain.gaussian_pixels @ key, swept.gaussian_pixels @ key)
    assert kept.float().mean() > 0.99 and torch.equal(swept.gaussian_pixels, plain.gaussian_pixels[kept])
    torch.testing.assert_close(swept.features_dc, plain.features_dc[kept])
    torch.testing.assert_close(swept.opacities, plain.opacities[kept])
    cameras = swept.context_provider(lambda shape: max(shape)).c2w[:, :3, 3]
    origins = cameras[swept.gaussian_pixels[:, 0]]
    before, after = plain.means.detach()[kept] - origins, swept.means.detach() - origins
    torch.testing.assert_close(F.normalize(after, dim=-1), F.normalize(before, dim=-1), atol=1e-4, rtol=0)
    ratio = after.norm(dim=-1) / before.norm(dim=-1)
    assert ((ratio > 0.5 - 1e-4) & (ratio < 2 + 1e-4)).all() and (ratio - 1).abs().gt(0.1).float().mean() > 0.1
    torch.testing.assert_close(swept.scales.exp(), plain.scales.exp()[kept] * ratio[:, None], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "model, message",
    [
        ({"depth_sweep": True}, "--pipeline.model.depth-sweep moves the encoder's Gaussians"),
        ({"depth_sweep": True, "gaussian_resolution": "encoder", "depth_sweep_views": 1},
         "--pipeline.model.depth-sweep-views must be at least 2"),
    ],
)  # fmt: skip
def test_a_bad_depth_sweep_is_refused_in_one_line(scene, tmp_path, capsys, model, message):
    _assert_refused(scene, tmp_path, capsys, 0, message, **model)


def test_a_prediction_start_does_not_refine_by_default(scene, tmp_path):
    start = _train(
        scene, tmp_path / "start", steps=0, gaussian_resolution="encoder", depth_sweep=True
    )  # as fine-tuning's
    assert start.sh_degree_to_use() == 3  # feed-forward: every band the prediction has
    predicted = start.means.shape[0]
    model = _train(scene, tmp_path, warmup_length=1, refine_every=2, densify_grad_thresh=1e-6)
    assert not model.refining and model.means.shape[0] == predicted
    for start in ("random", "points"):
        model.config.initialization = start
        assert model.refining


def test_context_view_weight_scales_the_context_views_loss(scene):
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = ("frame_00040_train", "frame_00045_train")
    config.pipeline.model.encoder_long_side = 160
    config.pipeline.model.context_view_weight = 3.0
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    model = pipeline.model
    model.train()
    context, other = pipeline.datamanager.context_indices()[0], 1
    assert other not in model.context_train_indices
    with torch.no_grad():
        for index in (context, other):
            batch = pipeline.datamanager.cached_train[index]
            camera = pipeline.datamanager.train_dataset.cameras[index : index + 1]
            outputs = model(camera)
            weighted = model.get_loss_dict(outputs, batch)["main_loss"]
            model.config.context_view_weight = 1.0
            plain = model.get_loss_dict(outputs, batch)["main_loss"]
            model.config.context_view_weight = 3.0
            torch.testing.assert_close(weighted, plain * (3.0 if index == context else 1.0))


def _trainer(scene, output, **model):
    config = _config(scene, output, 10, **model)
    config.pipeline.datamanager.data = scene  # what ns-train's main does with --data
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_a_prediction_fine_tunes_at_its_own_rates_a_random_start_at_splatfacto_s(scene, tmp_path):
    def rates(trainer, step: int) -> dict[str, float]:
        """Each group's rate at ``step`` (its scheduler's multiplier times the initial rate)."""
        out = {}
        for name, optimizer in trainer.optimizers.optimizers.items():
            scheduler = trainer.optimizers.schedulers.get(name)
            group = optimizer.param_groups[0]
            out[name] = scheduler.lr_lambdas[0](step) * group["initial_lr"] if scheduler else group["lr"]
        return out

    splatfacto = pixelsplat_trainer_config().optimizers
    prediction = _trainer(
        scene, tmp_path / "p", prediction_lr_scale={"means": (0.1, 0.1), "opacities": (0.5, 0.05)},
        prediction_lr_steps=(0, 100),
    )  # fmt: skip
    assert prediction.optimizers.optimizers["opacities"].param_groups[0]["lr"] == pytest.approx(0.025)  # step 0
    start, middle, end, later = (rates(prediction, step) for step in (0, 50, 100, 30000))
    assert start["means"] == pytest.approx(0.1 * splatfacto["means"]["optimizer"].lr)
    assert later["means"] == pytest.approx(0.1 * splatfacto["means"]["scheduler"].lr_final)  # on its own decay
    opacity = splatfacto["opacities"]["optimizer"].lr
    assert (start["opacities"], middle["opacities"]) == pytest.approx((0.5 * opacity, 0.5 * 0.1**0.5 * opacity))
    assert end["opacities"] == later["opacities"] == pytest.approx(0.05 * opacity)  # constant after the steps
    assert start["scales"] == later["scales"] == splatfacto["scales"]["optimizer"].lr  # a group not named
    random = _trainer(scene, tmp_path / "r", initialization="random", num_random=100)
    for name, rate in rates(random, 0).items():
        assert rate == pytest.approx(splatfacto[name]["optimizer"].lr), name
    assert rates(random, 30000)["opacities"] == splatfacto["opacities"]["optimizer"].lr


def test_an_unknown_or_non_positive_rate_scale_is_refused_in_one_line(scene, tmp_path, capsys):
    for scales in ({"positions": (0.1, 0.1)}, {"means": (0.0, 0.1)}):
        with pytest.raises(SystemExit) as stopped:
            _trainer(scene, tmp_path / "refused", prediction_lr_scale=scales)
        assert stopped.value.code == 2
        said = " ".join(capsys.readouterr().out.split())
        assert "--pipeline.model.prediction-lr-scale: expected GROUP START END" in said and "Traceback" not in said
    assert not any((tmp_path / "refused").rglob("*.ckpt"))


def test_ns_train_points_start_seeds_splatfacto_from_the_prediction(scene, tmp_path):
    start = _train(
        scene, tmp_path / "start", steps=0, initialization="points", prediction_points=2000,
        prediction_points_spread=(1.5, 2.0),
    )  # fmt: skip
    assert start.config.gaussian_resolution == "native"  # the sharp Gaussians' centres and colours
    assert start.means.shape[0] == 2000 and start.gaussian_pixels.shape[0] == 2000
    torch.testing.assert_close(start.opacities.sigmoid(), torch.full((2000, 1), 0.1))
    seeds, colours, pixels = start.means.detach().clone(), start.features_dc.detach().clone(), start.gaussian_pixels
    start.predict_gaussians()  # the prediction they came from, in the same process
    # The seeds are the seeded sample of the prediction's Gaussians: their colours and source pixels, their
    # centres moved along their cameras' rays by at most the spread either way.
    chosen = sample_points(2000, start.means.shape[0], seed=start.config.seed)
    assert torch.equal(colours, start.features_dc.detach()[chosen]) and torch.equal(
        pixels, start.gaussian_pixels[chosen]
    )
    # the context cameras' centres, in the dataparser's frame like the Gaussians
    cameras = start.context_provider(lambda shape: max(shape)).c2w[:, :3, 3]
    torch.testing.assert_close(start.context_origins, cameras)
    origins = cameras[pixels[:, 0]]
    predicted = start.means.detach()[chosen]
    # Each seed's spread: how far the other context view puts its surface, within the configured bounds.
    least, most = start.config.prediction_points_spread
    spreads = seed_spreads(start.depth_disagreement[chosen], least, most)
    torch.testing.assert_close(seeds, spread_along_rays(predicted, origins, spreads, seed=start.config.seed))
    assert (spreads == least).any() and (spreads == most).any()  # the chair's pair has both
    ratio = (seeds - origins).norm(dim=-1) / (predicted - origins).norm(dim=-1)
    assert ((ratio >= 1 / spreads - 1e-4) & (ratio <= spreads + 1e-4)).all() and ratio.max() > least
    assert start.depth_disagreement.shape[0] == start.means.shape[0]  # one per kept Gaussian
    backdrop = start.gaussian_pixels.shape[0] - int((start.depth_disagreement != 1).sum())
    assert (start.depth_disagreement[-backdrop:] == 1).all() and 0 < backdrop < start.means.shape[0]
    # By default (1 1) the seeds are the prediction's Gaussians' centres themselves.
    unmoved = _train(scene, tmp_path / "unmoved", steps=0, initialization="points", prediction_points=2000)
    assert torch.equal(unmoved.means.detach(), predicted)
    assert start.learning_rate_factors(list(start.config.prediction_lr_scale)) == {}  # splatfacto's rates
    assert start.strategy.reset_every < 1 << 30  # and its opacity resets
    model = _train(scene, tmp_path, steps=10, initialization="points", prediction_points=2000, warmup_length=1,
                   refine_every=2)  # fmt: skip
    assert model.refining and model.strategy.prune_opa == 0.1  # splatfacto's refinement
    assert model.means.shape[0] != 2000 and model.gaussian_pixels.shape[0] == model.means.shape[0]
    assert model.sh_degree_to_use() == 0  # seeded without bands: splatfacto's schedule from degree 0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("prediction_points", 3, "--pipeline.model.prediction-points must be at least 4"),
        ("prediction_points_spread", (0.5, 2.0), "--pipeline.model.prediction-points-spread must be two factors"),
        ("prediction_points_spread", (2.0, 1.5), "--pipeline.model.prediction-points-spread must be two factors"),
    ],
)
def test_a_bad_points_start_is_refused_in_one_line(scene, tmp_path, capsys, field, value, message):
    _assert_refused(scene, tmp_path, capsys, 2, message, initialization="points", **{field: value})


def _assert_refused(scene, tmp_path, capsys, steps: int, message: str, **model) -> None:
    """``ns-train`` with these model fields stops with exit 2, ``message`` in one line, no traceback, no checkpoint."""
    from nerfstudio.scripts.train import main as train_main

    from pixelsplat_ns.nerfstudio.trainer import close_event_writers

    config = _config(scene, tmp_path / "refused", steps, **model)
    config.viewer.quit_on_train_completion = True
    with pytest.raises(SystemExit) as stopped:
        train_main(config)
    close_event_writers()
    assert stopped.value.code == 2
    said = " ".join(capsys.readouterr().out.split())
    assert message in said and "Traceback" not in said
    assert not any((tmp_path / "refused").rglob("*.ckpt"))


def test_the_gaussian_resolution_resolves_by_the_run():
    def resolved(iterations: int, **model) -> str:
        config = pixelsplat_trainer_config()
        config.max_num_iterations = iterations
        for name, value in model.items():
            setattr(config.pipeline.model, name, value)
        config.resolve_start()
        return config.pipeline.model.gaussian_resolution

    assert resolved(0) == "native" and resolved(10) == "encoder"
    assert resolved(10, gaussian_stereo=True) == resolved(10, gaussian_scale=0.3) == "native"  # asked for native
    assert (
        resolved(10, gaussian_resolution="native") == "native"
        and resolved(0, gaussian_resolution="encoder") == "encoder"
    )
    assert resolved(10, initialization="random") == "native"  # nothing is predicted
    assert resolved(10, initialization="points") == "native"  # seeds from the sharp Gaussians
