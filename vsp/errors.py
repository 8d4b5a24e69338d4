"""Error types that name the file, row, key or concept at fault, so a user knows what to fix."""


class VspInputError(ValueError):
    """Bad user input: the message names the file and row (or key, concept, layer) at fault."""


class ConfigMismatchError(RuntimeError):
    """A run points at a store prefix that already holds results of a different configuration."""
