"""clipcull: rank and cull photos by aesthetic quality with CLIP."""

__version__ = "0.1.0"
