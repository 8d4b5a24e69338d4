"""Inputs of a run: norms, concept names, benchmark pairs, images, word vectors, the generated demo world.

`norms` (CSLB / McRae), `concepts` (concept name -> word), `benchmarks` (MEN / SimLex-999 pairs matched to
concepts), `images`, `text` (word vectors) and `synthetic` (the demo world).
"""
