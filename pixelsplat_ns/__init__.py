"""pixelsplat_ns: pixelSplat for nerfstudio.

Importing the package has no side effects; nerfstudio finds the method through the
``nerfstudio.method_configs`` entry point (see ``pixelsplat_ns.nerfstudio.methods``).
"""

__version__ = "0.1.0"
