"""Meta-embeddings: SVD and 1ToN (`methods`) and the stage that builds and decodes them (`stage`).

``vsp.meta`` was one module in release 0.1; its names still resolve here (from ``vsp.meta.methods``) for
one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.meta.methods")
