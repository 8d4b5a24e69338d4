"""vsp: which human semantic knowledge each layer of an image network encodes.

The package is organised in rooms, one per stage and concept (``docs/architecture.md``): ``io/`` (store,
bookkeeping), ``data/`` (norms, concepts, benchmarks, images, text, the demo world), one folder per stage
(``extract/``, ``decode/``, ``meta/``, ``mapping/``, ``similarity/``, ``report/``), and at the top the stage
contract (``stage.py``), the registry (``pipeline.py``), the run file (``config.py``) and the run record
(``runrecord.py``).

The flat module names of release 0.1 (``vsp.store``, ``vsp.features``, ``vsp.decode_stage`` ...) still import,
for one release, with a DeprecationWarning naming the new module (``MOVED``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

#: Flat module names of release 0.1 and the module each now lives in (removed in the next release).
MOVED: dict[str, str] = {
    "vsp.store": "vsp.io.store",
    "vsp.bookkeeping": "vsp.io.bookkeeping",
    "vsp.compare": "vsp.io.compare",
    "vsp.norms": "vsp.data.norms",
    "vsp.concepts": "vsp.data.concepts",
    "vsp.images": "vsp.data.images",
    "vsp.text": "vsp.data.text",
    "vsp.synthetic": "vsp.data.synthetic",
    "vsp.networks": "vsp.extract.networks",
    "vsp.features": "vsp.extract.features",
    "vsp.extract_stage": "vsp.extract.stage",
    "vsp.probe": "vsp.decode.probe",
    "vsp.decode_stage": "vsp.decode.stage",
    "vsp.embeddings": "vsp.meta.stage",
    "vsp.mapping_stage": "vsp.mapping.stage",
    "vsp.similarity_stage": "vsp.similarity.stage",
    "vsp.explain": "vsp.report.explain",
    "vsp.paper_results": "vsp.report.paper",
    "vsp.runconfig": "vsp.config",
    "vsp.runmanifest": "vsp.runrecord",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a 0.1 module name as the module it moved to (the same module object, so state is shared)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: D102
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # noqa: D102
        return None

    def exec_module(self, module) -> None:  # noqa: D102
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new}; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(new)  # the import system returns this one


def forward_names(package: str, target: str):
    """A module ``__getattr__`` that resolves ``package``'s 0.1 names from ``target`` (for one release).

    ``vsp.decode`` was one module in 0.1 and is a room now; ``from vsp.decode import aggregate`` still works.
    """

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(target), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
