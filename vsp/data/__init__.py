"""Inputs of a run: CSLB/McRae norms, concept names -> words, benchmark pairs, images, word vectors, and
the generated demo world."""
