"""vsp: which human semantic knowledge each layer of an image network encodes."""

__version__ = "0.1.0"
