"""Meta-embeddings: SVD and 1ToN (`methods`) and the stage that builds and decodes them (`stage`).

``vsp.meta`` was one module in release 0.1; its names still resolve here (from ``vsp.meta.methods``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.meta``, now in ``vsp.meta.methods``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.meta.methods")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.meta' has no attribute {name!r}") from None
