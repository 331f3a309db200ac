"""PixelSplatModel in-process: prediction into splatfacto's parameters, rendering, fine-tuning."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
from tests.scenes import cut_scene


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    scene = cut_scene("pavilion-chair-midday", tmp_path_factory.mktemp("scene"), train=[40, 41, 45, 46], eval_=[43])
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = ("frame_00040_train", "frame_00045_train")
    config.pipeline.model.encoder_long_side = 320  # native size: 320x176 after the crop to the patch multiple
    config.pipeline.model.gaussian_resolution = "encoder"  # pixelSplat's own Gaussians: one per encoder pixel
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_prediction_fills_splatfacto_parameters(pipeline):
    model = pipeline.model
    n = 2 * 320 * 176
    assert model.means.shape == (n, 3)
    assert model.scales.shape == (n, 3) and model.quats.shape == (n, 4)
    assert model.features_dc.shape == (n, 3) and model.features_rest.shape == (n, 15, 3)
    assert model.opacities.shape == (n, 1)
    for name, value in model.gauss_params.items():
        assert torch.isfinite(value).all(), name
    torch.testing.assert_close(model.quats.norm(dim=-1), torch.ones(n), atol=1e-5, rtol=0)
    assert model.context_names == ["frame_00040_train.png", "frame_00045_train.png"]


def test_get_outputs_for_camera_returns_rgb_depth_accumulation(pipeline):
    model = pipeline.model
    model.eval()
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(camera)
    h, w = int(camera.height), int(camera.width)
    assert outputs["rgb"].shape == (h, w, 3)
    assert outputs["depth"].shape == (h, w, 1)
    assert outputs["accumulation"].shape == (h, w, 1)
    assert (outputs["rgb"] >= 0).all() and (outputs["rgb"] <= 1).all()
    accumulation = outputs["accumulation"]
    assert (accumulation >= 0).all() and (accumulation <= 1).all()
    # The held-out view lies between the context views: their Gaussians cover most of it.
    assert (accumulation > 0.01).float().mean() > 0.5
    covered = accumulation[..., 0] > 0.01
    assert torch.isfinite(outputs["depth"]).all() and (outputs["depth"][covered] > 0).all()


def test_fine_tuning_gets_gradients_and_lowers_the_loss(pipeline):
    model = pipeline.model
    model.train()
    params = [p for group in model.get_param_groups().values() for p in group]
    optimizer = torch.optim.Adam(params, lr=5e-3)
    camera, batch = pipeline.datamanager.next_train(0)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        outputs = model(camera)
        loss = sum(model.get_loss_dict(outputs, batch).values())
        loss.backward()
        losses.append(loss.item())
        if len(losses) == 1:
            for name in ("means", "scales", "quats", "features_dc", "opacities"):
                grad = model.gauss_params[name].grad
                assert grad is not None and grad.abs().sum() > 0, name
        optimizer.step()
    assert losses[-1] < 0.9 * losses[0], losses


def test_checkpoint_state_reloads_with_torch_default_weights_only(pipeline):
    config = pixelsplat_trainer_config()
    optimizers = __import__("nerfstudio.engine.optimizers", fromlist=["Optimizers"]).Optimizers(
        config.optimizers, pipeline.model.get_param_groups()
    )
    for _ in range(3):
        optimizers.scheduler_step_all(0)
    state = {
        "pipeline": pipeline.state_dict(),
        "optimizers": {k: v.state_dict() for k, v in optimizers.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in optimizers.schedulers.items()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer)  # weights_only=True by default
    assert "_model.gauss_params.means" in reloaded["pipeline"]


def test_lpips_is_skipped_with_one_warning_when_alexnet_weights_are_absent(monkeypatch, tmp_path: Path):
    import pixelsplat_ns.metrics as metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(metrics, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert metrics.build_lpips() is None
        assert metrics.build_lpips() is None
    messages = [str(w.message) for w in caught if "LPIPS" in str(w.message)]
    assert len(messages) == 1
    assert str(tmp_path / "hub" / "checkpoints") in messages[0]


def test_viewer_renders_lower_resolution_while_moving_through_the_cpu_rasteriser(pipeline):
    """nerfstudio's viewer picks the resolution from the measured render speed while the
    camera moves ("low_move") and renders max_res when it stops ("high"); both go through
    ``get_outputs_for_camera`` and the project's CPU rasteriser."""
    from types import SimpleNamespace

    from nerfstudio.viewer.render_state_machine import RenderStateMachine

    model = pipeline.model
    model.eval()
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    aspect = float(camera.width) / float(camera.height)

    machine = RenderStateMachine.__new__(RenderStateMachine)  # resolution logic only: no viser client
    machine.viewer = SimpleNamespace(control_panel=SimpleNamespace(max_res=512))
    machine.target_fps = 24
    sizes = {}
    for state in ("low_move", "high"):
        machine.state = state
        sizes[state] = machine._calculate_image_res(aspect)
    # Without a measured speed nerfstudio assumes 100k rays/s: about 4k pixels per frame at 24 fps.
    assert sizes["low_move"][0] * sizes["low_move"][1] < 0.05 * sizes["high"][0] * sizes["high"][1]

    for state, (height, _) in sizes.items():
        view = camera.to("cpu")
        view.rescale_output_resolution(height / int(view.height))
        outputs = model.get_outputs_for_camera(view)
        assert outputs["rgb"].shape[:2] == (int(view.height), int(view.width)), state
        assert model.info["backend"] == "torch"  # CPU tensors: the project's rasteriser, never gsplat
        assert torch.isfinite(outputs["rgb"]).all()


def test_walkthrough_traces_a_pixel_and_draws_it_in_nerfstudio_world(pipeline):
    """The viewer's walkthrough: a traced pixel's Gaussian drawn where the model's Gaussian is
    (frame conversion), its epipolar samples and depth buckets on the pixel's ray, clicking a
    Gaussian traces the pixel that made it, and the context cameras sit at their poses."""
    import socket
    from types import SimpleNamespace

    import viser

    from pixelsplat_ns.nerfstudio.walkthrough import (
        camera_items,
        encoder_gaussian_pixels,
        scene_items,
    )

    model = pipeline.model
    model.predict_gaussians()  # undo the fine-tuning of the tests above: the predicted Gaussians
    walkthrough = model.walkthrough
    run = walkthrough.run
    assert run.output.attention is not None and walkthrough.view.options == ["0", "1"]
    h, w = run.image_shape

    trace = walkthrough.trace(1, h // 2, w // 3)
    items = scene_items(trace, run)
    index = trace.gaussian_indices[0]
    torch.testing.assert_close(
        torch.from_numpy(items["gaussian"].points[0]), model.means[index].detach(), atol=1e-4, rtol=1e-4
    )
    assert encoder_gaussian_pixels(run.output, run.image_shape)[index].tolist() == [1, h // 2, w // 3]
    assert model.gaussian_pixels[index].tolist() == [1, h // 2, w // 3]  # encoder mode: nothing pruned here
    assert "epipolar_0" in items and items["epipolar_0"].points.shape == (trace.epipolar[0].xy.shape[0], 3)
    # Depth buckets lie on the pixel's ray (nerfstudio world): collinear with the camera centre.
    centre = torch.from_numpy(camera_items(run)[1].position).float()
    rays = torch.from_numpy(items["depth"].points) - centre
    directions = rays / rays.norm(dim=-1, keepdim=True)
    assert float((directions @ directions[0]).min()) > 0.9999
    assert "frame_00045_train" in walkthrough.readout.value and "depth" in walkthrough.readout.value

    # A click on the ray through a Gaussian traces that Gaussian's pixel.
    target = int(torch.sigmoid(model.opacities.detach()[h * w :, 0]).argmax()) + h * w  # an opaque one of view 1
    origin = centre + torch.tensor([0.05, -0.02, 0.03])
    picked = walkthrough.pick(origin, model.means[target].detach() - origin)
    assert picked is not None and target in picked.gaussian_indices and picked.view == 1

    # Context cameras: at the context views' centres in nerfstudio's world.
    cameras = pipeline.datamanager.train_dataset.cameras
    names = [p.name for p in pipeline.datamanager.train_dataset.image_filenames]
    for item in camera_items(run):
        pose = cameras.camera_to_worlds[names.index(item.name)]
        torch.testing.assert_close(torch.from_numpy(item.position).float(), pose[:3, 3], atol=1e-4, rtol=1e-4)
        assert item.image.shape == (h, w, 3) and item.depth.shape == (h, w, 3)

    # Pseudo-depth: a pixel's colour encodes the disparity of the Gaussian its trace reports.
    from pixelsplat_ns.nerfstudio.walkthrough import colormap, pseudo_depth_image

    near, far = float(run.views.near[0, 1]), float(run.views.far[0, 1])
    disparity = (1 / trace.depths[0, 0].double() - 1 / far) / (1 / near - 1 / far)
    assert 0 <= float(disparity) <= 1
    depth_map = pseudo_depth_image(run, 1)
    assert (depth_map[h // 2, w // 3] == colormap(disparity.reshape(1))[0]).all()
    assert len(np.unique(depth_map.reshape(-1, 3), axis=0)) > 20  # a map, not one colour

    # Drawn into a real viser server.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port)
    try:
        walkthrough.control._setup(SimpleNamespace(viser_server=server))
        walkthrough.trace(0, 3, 4)
        walkthrough.draw_cameras(True)
        nodes = set(server.scene._handle_from_node_name)
        assert {"/pixelsplat/trace/ray", "/pixelsplat/trace/depth", "/pixelsplat/trace/gaussian"} <= nodes
        assert {f"/pixelsplat/context/{name}" for name in run.names} <= nodes
        walkthrough.frustum_images.value = "pseudo-depth"
        walkthrough.draw_cameras(True)
        assert {f"/pixelsplat/context/{name}" for name in run.names} <= set(server.scene._handle_from_node_name)
    finally:
        server.stop()
        walkthrough.control = type(walkthrough.control)()  # detach from the stopped server


def test_nerfstudio_viewer_installs_the_walkthrough_panel(pipeline, tmp_path):
    """nerfstudio's own Viewer finds the panel's elements under "Custom Elements" and hands
    its control the viser server (what ns-train / ns-viewer do at start-up)."""
    import socket
    from types import SimpleNamespace

    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.viewer.viewer import Viewer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    viewer = Viewer(
        ViewerConfig(websocket_port=port, websocket_host="127.0.0.1"),
        log_filename=tmp_path / "viewer.log", datapath=tmp_path, pipeline=pipeline,
    )  # fmt: skip
    try:
        installed = {path for path, _ in viewer.viewer_elements}
        panel = "Custom Elements/model/walkthrough"
        assert {f"{panel}/trace_button", f"{panel}/pick_button", f"{panel}/show_cameras", f"{panel}/view"} <= installed
        assert pipeline.model.walkthrough.control.viser_server is viewer.viser_server

        # A browser that connects is put at the first context camera, with the pose nerfstudio's
        # own training-camera frustums give (their click handler) and the camera's vertical fov.
        import contextlib

        import viser.transforms as vtf
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        client = SimpleNamespace(
            camera=SimpleNamespace(position=None, wxyz=None, fov=None), atomic=contextlib.nullcontext
        )
        pipeline.model.walkthrough.control.look_through_first_context_camera(client)
        data = pipeline.datamanager
        camera = data.train_dataset.cameras[data.context_indices()[0]]
        c2w = camera.camera_to_worlds.numpy()
        expected = (vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)).wxyz
        np.testing.assert_allclose(client.camera.position, c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO, atol=1e-5)
        assert np.allclose(client.camera.wxyz, expected, atol=1e-5) or np.allclose(
            client.camera.wxyz, -expected, atol=1e-5
        )
        assert client.camera.fov == pytest.approx(2 * np.arctan(0.5 * float(camera.height) / float(camera.fy)))
    finally:
        viewer.viser_server.stop()
        # Detach the shared pipeline's panel from the stopped server (the other tests reuse it).
        for _, element in viewer.viewer_elements:
            element.gui_handle = None
        pipeline.model.walkthrough.control = type(pipeline.model.walkthrough.control)()


def test_walkthrough_predicts_again_from_a_picked_pair(pipeline):
    model, walkthrough = pipeline.model, pipeline.model.walkthrough
    original = (walkthrough.first.value, walkthrough.second.value)
    assert original == ("frame_00040_train.png", "frame_00045_train.png")
    assert walkthrough.first.options == [p.name for p in pipeline.datamanager.train_dataset.image_filenames]
    try:
        before = model.means.detach().clone()
        walkthrough.trace(0, 0, 0)  # a traced run of the old pair exists ...
        walkthrough.first.value, walkthrough.second.value = "frame_00041_train.png", "frame_00046_train.png"
        assert walkthrough.predict_pair()
        assert model.context_names == ["frame_00041_train.png", "frame_00046_train.png"]
        assert not torch.allclose(model.means.detach(), before)
        assert walkthrough.run.names == model.context_names  # ... and is replaced by the new pair's

        walkthrough.second.value = "frame_00041_train.png"  # the same image twice
        assert not walkthrough.predict_pair()
        assert "pair refused" in walkthrough.readout.value
        assert model.context_names == ["frame_00041_train.png", "frame_00046_train.png"]
        assert pipeline.datamanager.config.context_views == ("frame_00041_train.png", "frame_00046_train.png")

        model.step = 3  # fine-tuning has started: its optimisers own the Gaussians
        walkthrough.second.value = "frame_00045_train.png"
        assert not walkthrough.predict_pair() and "fine-tuned" in walkthrough.readout.value
    finally:
        model.step = 0
        walkthrough.first.value, walkthrough.second.value = original
        assert walkthrough.predict_pair()
