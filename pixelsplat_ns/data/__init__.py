"""Multi-scene training data: scenes (chunk files or nerfstudio folders) -> examples.

* :mod:`~pixelsplat_ns.data.scenes`   :class:`Scene`, the :class:`SceneSource` protocol, scene folders
* :mod:`~pixelsplat_ns.data.chunks`   the RE10K/ACID ``*.torch`` chunk format: reader and writer
* :mod:`~pixelsplat_ns.data.sampling` the bounded view sampler (context gap warm-up)
* :mod:`~pixelsplat_ns.data.examples` crop/resize, scale, near/far; the sharded IterableDataset
* :mod:`~pixelsplat_ns.data.sources`  :func:`open_scene_source`: any of the above from a path
"""

from pixelsplat_ns.data.chunks import ChunkSource, ChunkWriter
from pixelsplat_ns.data.examples import (
    ExampleConfig,
    ExampleDataset,
    SkipExample,
    example_from_indices,
    example_loader,
    make_example,
)
from pixelsplat_ns.data.sampling import ViewSamplerConfig, sample_views
from pixelsplat_ns.data.scenes import DataWarning, Scene, SceneFolderSource, SceneSource
from pixelsplat_ns.data.sources import ConcatSource, open_scene_source

__all__ = [
    "ChunkSource",
    "ChunkWriter",
    "ConcatSource",
    "DataWarning",
    "ExampleConfig",
    "ExampleDataset",
    "Scene",
    "SceneFolderSource",
    "SceneSource",
    "SkipExample",
    "ViewSamplerConfig",
    "example_from_indices",
    "example_loader",
    "make_example",
    "open_scene_source",
    "sample_views",
]
