"""Word similarity: MEN / SimLex-999 Spearman (`score`) and the stage (`stage`, Table 3).

``vsp.similarity`` was one module in release 0.1; its names still resolve here (from ``vsp.similarity.score``)
for one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.similarity.score")
