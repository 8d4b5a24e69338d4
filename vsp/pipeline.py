"""The one ordered registry of stages: a stage is its room (``vsp/<stage>/``) plus one line here.

Every place that needs to know the stages asks this module: the run file (which sections exist, in which
order stages run, which need norms or images), the runner (``jobs.runner``), ``vsp status`` and the run
record (each stage's progress), and the report (each stage's outputs). Entries are ``(name, "module:Class")``
so the names are known without importing the stages (``vsp status`` stays quick); :func:`get` imports one.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vsp.stage import Stage

#: The stages in the order they run.
STAGES: list[tuple[str, str]] = [
    ("extract", "vsp.extract.stage:ExtractStage"),
    ("decode", "vsp.decode.stage:DecodeStage"),
    ("meta", "vsp.meta.stage:MetaStage"),
    ("map", "vsp.mapping.stage:MapStage"),
    ("similarity", "vsp.similarity.stage:SimilarityStage"),
    ("report", "vsp.report.stage:ReportStage"),
]


def names() -> tuple[str, ...]:
    """Every stage's name, in pipeline order."""
    return tuple(name for name, _ in STAGES)


def get(name: str) -> Stage:
    """The stage called ``name`` (KeyError naming the known stages otherwise)."""
    for entry_name, target in STAGES:
        if entry_name == name:
            return _load(target)
    raise KeyError(f"unknown stage {name!r}; stages are {', '.join(names())}")


def stages() -> list[Stage]:
    """Every stage, in pipeline order."""
    return [_load(target) for _, target in STAGES]


@cache
def _load(target: str) -> Stage:
    module, _, cls = target.partition(":")
    stage = getattr(importlib.import_module(module), cls)()
    return stage
