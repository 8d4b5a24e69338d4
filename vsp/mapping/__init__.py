"""Zero-shot mapping: the mappers and repeated CV (`mappers`) and the stage (`stage`, Tables 2 and 4).

``vsp.mapping`` was one module in release 0.1; its names still resolve here (from ``vsp.mapping.mappers``) for
one release.
"""

from vsp import forward_names

__getattr__ = forward_names(__name__, "vsp.mapping.mappers")
