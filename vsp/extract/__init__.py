"""Feature extraction: networks, layer taps, pooling, the Zarr feature layout and the stage.

Modules: the networks and their layer taps (`networks`), pooling hooks and per-concept aggregation
(`hooks`), the Zarr feature layout (`features`) and the stage (`stage`).

``vsp.extract`` was one module in release 0.1; its names still resolve here (from ``vsp.extract.hooks``) for
one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.extract.hooks")
