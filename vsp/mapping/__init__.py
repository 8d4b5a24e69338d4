"""Zero-shot mapping: the mappers and repeated CV (`mappers`) and the stage (`stage`, Tables 2 and 4).

``vsp.mapping`` was one module in release 0.1; its names still resolve here (from ``vsp.mapping.mappers``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.mapping``, now in ``vsp.mapping.mappers``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.mapping.mappers")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.mapping' has no attribute {name!r}") from None
