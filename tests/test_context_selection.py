"""Choosing the context views by name (``--pipeline.datamanager.context-views``) and the default pair."""

from __future__ import annotations

import pytest

from pixelsplat_ns.nerfstudio.context import ContextSelectionError, default_context_pair, resolve_context_names

TRAIN = [f"data/scene/images/frame_{i:05d}_train.png" for i in (0, 1, 2, 4, 5, 6, 8, 9)]
EVAL = ["data/scene/images/frame_00003_eval.png", "data/scene/images/frame_00007_eval.png"]


def test_names_stems_and_path_suffixes_resolve():
    assert resolve_context_names(["frame_00004_train.png", "frame_00006_train"], TRAIN, EVAL) == [3, 5]
    assert resolve_context_names(["images/frame_00009_train.png", "frame_00000_train"], TRAIN, EVAL) == [7, 0]


@pytest.mark.parametrize(
    "requested, message",
    [
        (["frame_00003_eval.png", "frame_00004_train.png"], "frame_00003_eval.png' is in the dataparser's eval split"),
        (["frame_00042_train.png", "frame_00004_train.png"], "frame_00042_train.png' is not a training image"),
        (["frame_00004_train", "frame_00004_train.png"], "is named twice"),
    ],
)
def test_bad_names_are_refused_with_the_reason(requested, message):
    with pytest.raises(ContextSelectionError, match=message):
        resolve_context_names(requested, TRAIN, EVAL)


def test_an_ambiguous_name_asks_for_a_longer_path():
    paths = ["a/images/frame.png", "b/images/frame.png", "b/images/other.png"]
    with pytest.raises(ContextSelectionError, match="matches 2 training images"):
        resolve_context_names(["frame.png", "other.png"], paths)
    assert resolve_context_names(["b/images/frame.png", "other.png"], paths) == [1, 2]


def test_default_pair_is_centred_on_the_middle_image():
    assert default_context_pair(TRAIN) == [4, 5]  # 8 images: gap max(1, round(0.8)) = 1
    assert default_context_pair(TRAIN, gap=3) == [3, 6]
    assert default_context_pair(list(reversed(TRAIN)), gap=3) == [4, 1]  # capture (file-name) order
    with pytest.raises(ContextSelectionError, match="1 training image"):
        default_context_pair(TRAIN[:1])
