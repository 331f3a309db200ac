"""The viewer's walkthrough of pixelSplat's insides: context cameras, and one pixel's path
through the encoder (its epipolar samples coloured by attention, its depth distribution
along the ray, the Gaussian it became).

The panel appears under "Custom Elements" in nerfstudio's viewer. Pick a pixel with the
sliders or by clicking a Gaussian in the scene. The geometry (``scene_items``,
``camera_items``, ``encoder_gaussian_pixels``, ``pick_gaussian``) is plain tensor code; only
``Walkthrough`` touches viser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from pixelsplat_ns.cameras import ContextViews, opengl_to_opencv_c2w, to_caller_frame
from pixelsplat_ns.encoder import EncoderOutput, PixelTrace, trace_pixel


@dataclass
class ContextRun:
    """One encoder run on the context views, kept for tracing (attention included)."""

    views: ContextViews
    output: EncoderOutput
    names: list[str]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.views.image.shape[-2:])

    def trace(self, view: int, row: int, col: int) -> PixelTrace:
        v = self.views
        return trace_pixel(self.output, v.extrinsics, v.intrinsics, v.near, v.far, self.image_shape, view, row, col)


@dataclass
class PointSet:
    """Points to draw, in nerfstudio's world frame, with uint8 RGB colours."""

    points: np.ndarray  # [n, 3] float32
    colors: np.ndarray  # [n, 3] uint8
    size: float


def colormap(values: Tensor) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (dark blue -> yellow)."""
    t = values.clamp(0, 1).detach().cpu().float()[:, None]
    low, mid, high = torch.tensor([40.0, 30, 120]), torch.tensor([30.0, 160, 140]), torch.tensor([250.0, 230, 40])
    colors = torch.where(t < 0.5, low + (mid - low) * (2 * t), mid + (high - mid) * (2 * t - 1))
    return colors.round().to(torch.uint8).numpy()


def scene_items(trace: PixelTrace, run: ContextRun, samples_on_ray: int = 64) -> dict[str, PointSet]:
    """What to draw for a traced pixel, in nerfstudio's world frame (the encoder's world
    divided by the context scale):

    * ``ray``: the pixel's ray from near to far;
    * ``depth``: the depth buckets' centres on the ray, coloured and sized by probability;
    * ``epipolar_<view>``: the epipolar samples' 3D points, coloured by attention (mean over
      the last layer's heads; grey where the line misses that view);
    * ``gaussian``: the pixel's Gaussian centre(s)."""
    scale = run.views.scene_scale
    view = trace.view
    near, far = float(run.views.near[0, view]), float(run.views.far[0, view])
    steps = torch.linspace(near, far, samples_on_ray, dtype=trace.ray_origin.dtype)
    ray = trace.ray_origin + steps[:, None] * trace.ray_direction
    items = {"ray": PointSet(_world(ray, scale), np.full((samples_on_ray, 3), 200, np.uint8), 0.004)}

    pdf, depths = trace.depth_pdf[0], trace.bucket_depths[0]
    buckets = trace.ray_origin + depths[:, None] * trace.ray_direction
    items["depth"] = PointSet(_world(buckets, scale), colormap(pdf / pdf.max()), 0.012)

    for epipolar in trace.epipolar:
        if epipolar.points is None:
            continue
        if epipolar.attention is not None and epipolar.valid:
            weights = epipolar.attention[-1].mean(0)
            colors = colormap(weights / weights.max().clamp_min(1e-12))
        else:
            colors = np.full((epipolar.points.shape[0], 3), 128, np.uint8)
        items[f"epipolar_{epipolar.other_view}"] = PointSet(_world(epipolar.points, scale), colors, 0.008)

    means = run.output.gaussians.means[0, trace.gaussian_indices]
    items["gaussian"] = PointSet(
        _world(means, scale), np.tile(np.array([[255, 60, 60]], np.uint8), (len(means), 1)), 0.02
    )
    return items


def _world(points: Float[Tensor, "n 3"], scene_scale: float) -> np.ndarray:
    return to_caller_frame(points, scene_scale).detach().cpu().numpy().astype(np.float32)


@dataclass
class CameraItem:
    name: str
    position: np.ndarray  # [3], nerfstudio world
    wxyz: np.ndarray  # [4], OpenCV camera axes (what viser's frustums use)
    fov: float  # vertical, radians
    aspect: float
    image: np.ndarray  # [h, w, 3] uint8
    depth: np.ndarray  # [h, w, 3] uint8, the pseudo-depth map (``pseudo_depth_image``)


def pseudo_depth_image(run: ContextRun, view: int) -> np.ndarray:
    """Where the encoder put each pixel's Gaussian, as an image: the depth of the pixel's
    first Gaussian as a disparity between the view's far (0, dark blue) and near (1,
    yellow) planes, the axis the depth buckets are spaced along. [h, w, 3] uint8."""
    h, w = run.image_shape
    depth = run.output.depths[0, view, :, 0, 0].double()
    near, far = run.views.near[0, view].double(), run.views.far[0, view].double()
    disparity = (1 / depth - 1 / far) / (1 / near - 1 / far)
    return colormap(disparity).reshape(h, w, 3)


def camera_items(run: ContextRun) -> list[CameraItem]:
    """The context cameras as the encoder saw them (crop included), in nerfstudio's world."""
    import viser.transforms as vtf

    h, w = run.image_shape
    items = []
    for v, name in enumerate(run.names):
        c2w = run.views.extrinsics[0, v].double().cpu()
        fy = float(run.views.intrinsics[0, v, 1, 1])  # normalised by the image height
        image = (run.views.image[0, v].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        items.append(
            CameraItem(
                name=name,
                position=to_caller_frame(c2w[:3, 3], run.views.scene_scale).numpy(),
                wxyz=vtf.SO3.from_matrix(c2w[:3, :3].numpy()).wxyz,
                fov=float(2 * np.arctan(0.5 / fy)),
                aspect=w / h,
                image=image,
                depth=pseudo_depth_image(run, v),
            )
        )
    return items


def encoder_gaussian_pixels(output: EncoderOutput, image_shape: tuple[int, int]) -> Tensor:
    """(view, row, column) of the context pixel behind each of the encoder's Gaussians, [n, 3]."""
    h, w = image_shape
    per_pixel = output.depths.shape[-2] * output.depths.shape[-1]
    pixel = torch.arange(output.gaussians.means.shape[1], device=output.depths.device) // per_pixel
    view, ray = pixel // (h * w), pixel % (h * w)
    return torch.stack((view, ray // w, ray % w), dim=-1)


def pick_gaussian(
    means: Float[Tensor, "n 3"],
    opacities: Float[Tensor, " n"],
    origin: Float[Tensor, " 3"],
    direction: Float[Tensor, " 3"],
    min_opacity: float = 0.1,
) -> int | None:
    """The visible Gaussian whose centre is nearest to a clicked ray (in front of its origin)."""
    direction = direction / direction.norm()
    offsets = means - origin
    along = offsets @ direction
    distance = (offsets - along[:, None] * direction).norm(dim=-1)
    candidates = (along > 0) & (opacities >= min_opacity)
    if not bool(candidates.any()):
        return None
    # Nearest to the ray, relative to how far away it is (a click is an angle, not a distance).
    score = torch.where(candidates, distance / along.clamp_min(1e-9), torch.full_like(distance, float("inf")))
    return int(score.argmin())


def viewer_pose(c2w_opengl: Float[Tensor, "3 4"]) -> tuple[np.ndarray, np.ndarray]:
    """(position, wxyz) that puts viser's camera at a nerfstudio camera (before viser's scale ratio)."""
    import viser.transforms as vtf

    c2w = opengl_to_opencv_c2w(c2w_opengl.double().cpu())  # viser's cameras look along +z, like OpenCV's
    return c2w[:3, 3].numpy(), vtf.SO3.from_matrix(c2w[:3, :3].numpy()).wxyz


def start_at_camera_control(first_camera: Callable[[], tuple[Tensor, float] | None], max_res: int | None = None):
    """A ViewerControl that puts every newly connected browser at ``first_camera()`` (OpenGL
    camera-to-world, vertical fov in radians): the viewer opens looking through the first
    context view instead of nerfstudio's default pose beside the scene. ``max_res``: the
    viewer's initial "Max res" (nerfstudio's is 512), for methods that render slowly."""
    from nerfstudio.viewer.viewer_elements import ViewerControl

    class StartAtContextCamera(ViewerControl):
        def _setup(self, viewer) -> None:
            super()._setup(viewer)
            viewer.viser_server.on_client_connect(self.look_through_first_context_camera)
            panel = getattr(viewer, "control_panel", None)
            if max_res is not None and panel is not None and hasattr(panel, "_max_res"):
                panel._max_res.value = max_res

        def look_through_first_context_camera(self, client) -> None:
            from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as ratio

            camera = first_camera()
            if camera is None:
                return
            position, wxyz = viewer_pose(camera[0])
            with client.atomic():
                client.camera.fov = camera[1]
                client.camera.wxyz = wxyz
                client.camera.position = position * ratio

    return StartAtContextCamera()


class Walkthrough(nn.Module):
    """The viewer panel (a parameter-free module so nerfstudio finds its GUI elements)."""

    pick_label = "Pick: click a Gaussian"

    def __init__(self, run_encoder: Callable[[], ContextRun], max_res: int | None = None) -> None:
        super().__init__()
        from nerfstudio.viewer.viewer_elements import (
            ViewerButton,
            ViewerCheckbox,
            ViewerDropdown,
            ViewerSlider,
            ViewerText,
        )

        self._run_encoder = run_encoder
        self._run: ContextRun | None = None
        self._first_camera: Callable[[], tuple[Tensor, float] | None] = lambda: None
        self.control = start_at_camera_control(lambda: self._first_camera(), max_res)
        self.show_cameras = ViewerCheckbox(
            "Context cameras", False, cb_hook=lambda element: self.draw_cameras(element.value),
            hint="Show the context views as the encoder saw them",
        )  # fmt: skip
        self.frustum_images = ViewerDropdown(
            "Context images", "colour", ["colour", "pseudo-depth"],
            cb_hook=lambda _: self.draw_cameras(self.show_cameras.value),
            hint="On the context cameras: the images, or where the encoder put each pixel's Gaussian (near: yellow)",
        )  # fmt: skip
        self.view = ViewerDropdown("Context view", "0", ["0", "1"], hint="The view the traced pixel belongs to")
        self.row = ViewerSlider("Pixel row", 0.5, 0.0, 1.0, 0.01, hint="Fraction of the image height")
        self.column = ViewerSlider("Pixel column", 0.5, 0.0, 1.0, 0.01, hint="Fraction of the image width")
        self.trace_button = ViewerButton("Trace pixel", cb_hook=lambda _: self.trace_selected())
        self.pick_button = ViewerButton(self.pick_label, cb_hook=lambda _: self.start_picking())
        self.readout = ViewerText("Traced", "", disabled=True)
        self._means: Callable[[], tuple[Tensor, Tensor, Tensor]] | None = None
        # Live pair picking (enabled by ``set_pair_choice``).
        self.first = ViewerDropdown("First context view", "-", ["-"], visible=False)
        self.second = ViewerDropdown("Second context view", "-", ["-"], visible=False)
        self.predict_button = ViewerButton(
            "Predict from this pair", cb_hook=lambda _: self.predict_pair(), visible=False
        )
        self._choose_pair: Callable[[str, str], None] | None = None

    def set_pair_choice(self, names: list[str], current: list[str], choose: Callable[[str, str], None]) -> None:
        """Offer the training images as context views; ``choose(a, b)`` re-predicts from a pair."""
        self._choose_pair = choose
        for dropdown, value in ((self.first, current[0]), (self.second, current[-1])):
            dropdown.set_options(names)
            dropdown.value = value
            dropdown.visible = True
        self.predict_button.visible = True

    def predict_pair(self) -> bool:
        """Re-predict the Gaussians from the selected pair; False (with the reason shown) if refused."""
        from pixelsplat_ns.errors import PixelSplatInputError

        if self._choose_pair is None:
            return False
        try:
            self._choose_pair(self.first.value, self.second.value)
        except PixelSplatInputError as error:
            self.readout.value = f"pair refused: {error}"
            return False
        self._run = None  # traces now describe the new prediction
        self.readout.value = f"predicted from {self.first.value} and {self.second.value}"
        viewer = getattr(self.control, "viewer", None)
        if viewer is not None and hasattr(viewer, "_trigger_rerender"):
            viewer._trigger_rerender()
        return True

    def set_first_camera(self, source: Callable[[], tuple[Tensor, float] | None]) -> None:
        """Where the viewer opens: ``source()`` gives the first context camera (OpenGL
        camera-to-world [3, 4] in nerfstudio's world, vertical fov in radians)."""
        self._first_camera = source

    def set_gaussian_source(self, source: Callable[[], tuple[Tensor, Tensor, Tensor]]) -> None:
        """Where the current Gaussians come from: (means in nerfstudio's world, opacities in
        [0, 1], the encoder pixel (view, row, column) each came from)."""
        self._means = source

    @property
    def run(self) -> ContextRun:
        if self._run is None:
            self._run = self._run_encoder()
            self.view.set_options([str(i) for i in range(len(self._run.names))])
        return self._run

    def trace_selected(self) -> PixelTrace:
        h, w = self.run.image_shape
        row = min(int(self.row.value * h), h - 1)
        col = min(int(self.column.value * w), w - 1)
        return self.trace(int(self.view.value), row, col)

    def trace(self, view: int, row: int, col: int) -> PixelTrace:
        """Trace one pixel, draw it (when a viewer is attached) and describe it."""
        trace = self.run.trace(view, row, col)
        self.draw_points(scene_items(trace, self.run))
        pdf = trace.depth_pdf[0]
        self.readout.value = (
            f"{self.run.names[view]} pixel ({row}, {col}): depth {float(to_caller_frame(trace.depths[0, 0], self.run.views.scene_scale)):.3g}, "
            f"top bucket {int(pdf.argmax())} of {pdf.numel()} (p = {float(pdf.max()):.2f})"
        )
        return trace

    def start_picking(self) -> None:
        def clicked(click) -> None:
            self.control.unregister_pointer_cb()  # one click per press of the button
            self.pick(torch.tensor(click.origin), torch.tensor(click.direction))

        self.control.register_pointer_cb("click", clicked)

    def pick(self, origin: Tensor, direction: Tensor) -> PixelTrace | None:
        """Trace the pixel whose Gaussian is nearest to a clicked ray (nerfstudio world)."""
        if self._means is None:
            return None
        means, opacities, pixels = self._means()
        index = pick_gaussian(means, opacities, origin.to(means), direction.to(means))
        if index is None:
            self.readout.value = "no Gaussian along that ray"
            return None
        if len(pixels) != len(means):  # a run saved before Gaussians recorded their pixels
            self.readout.value = "this run does not record which pixel made each Gaussian: use Trace pixel"
            return None
        view, row, col = (int(value) for value in pixels[index])
        self.view.value, self.row.value, self.column.value = (
            str(view),
            row / self.run.image_shape[0],
            col / self.run.image_shape[1],
        )
        return self.trace(view, row, col)

    def camera_items(self) -> list[CameraItem]:
        """The context cameras to draw (images and pseudo-depth maps)."""
        return camera_items(self.run)

    def draw_points(self, items: dict[str, PointSet]) -> None:
        """Draw a trace's points in the viewer (when one is attached)."""
        server = getattr(self.control, "viser_server", None)
        if server is None:
            return
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as ratio

        for name, item in items.items():
            server.scene.add_point_cloud(
                f"/pixelsplat/trace/{name}", item.points * ratio, item.colors, point_size=item.size * ratio
            )

    def draw_cameras(self, visible: bool) -> None:
        server = getattr(self.control, "viser_server", None)
        if server is None:
            return
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as ratio

        for camera in self.camera_items():
            handle = server.scene.add_camera_frustum(
                f"/pixelsplat/context/{camera.name}", fov=camera.fov, aspect=camera.aspect, scale=0.15,
                wxyz=camera.wxyz, position=camera.position * ratio, color=(255, 80, 40),
                image=camera.depth if self.frustum_images.value == "pseudo-depth" else camera.image,
            )  # fmt: skip
            handle.visible = visible
