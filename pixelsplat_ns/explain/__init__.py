"""``pixelsplat-ns explain``: a method's insides as a Rerun recording or a static figure.

``probe.py`` is the interface a method implements (``Explainable``: context views, renders, a
traced probe pixel); ``collect.py`` gathers a walkthrough from it (``explain``); ``recording.py``
(Rerun, optional extra) and ``figure.py`` (matplotlib) draw it; ``pixelsplat.py`` adapts
pixelSplat's model to the interface.
"""

from __future__ import annotations

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.explain.probe import ContextView, Explainable, ProbeTrace, check_probe

__all__ = ["ContextView", "Explainable", "ProbeTrace", "check_probe", "explainable_for"]


def explainable_for(model: object) -> Explainable:
    """The ``Explainable`` of a nerfstudio model: the model itself when it implements the
    protocol, pixelSplat's adapter for a ``PixelSplatModel``."""
    if isinstance(model, Explainable):
        return model
    from pixelsplat_ns.nerfstudio.model import PixelSplatModel

    if isinstance(model, PixelSplatModel):
        from pixelsplat_ns.explain.pixelsplat import PixelSplatExplainer

        return PixelSplatExplainer(model)
    raise PixelSplatInputError(
        f"{type(model).__name__} cannot be explained: explain records pixelSplat runs and models that implement "
        "pixelsplat_ns.explain.Explainable"
    )
