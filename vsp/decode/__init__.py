"""Property decoding: the batched probe, per-class aggregation and the stage.

Modules: the batched probe (`probe`), one layer's rows and the one per-class aggregation (`grid`), and the
stage (`stage`).

``vsp.decode`` was one module in release 0.1; its names still resolve here (from ``vsp.decode.grid``) for
one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.decode.grid")
