"""Waiting on Ray results in short slices, so that the driver's signal handlers run while it waits.

Python runs a signal handler only when the main thread gets back to the interpreter. A driver blocked in one
long ``ray.wait`` / ``ray.get`` never does: `ray job stop` (SIGTERM) would find it deaf, Ray would kill it
after its grace period, and ``run.json`` would say "running" forever. Every coordinator therefore waits
through these helpers, which call Ray with a timeout of ``SLICE_S`` in a loop.

Ray runs the handlers while it waits with a timeout; an exception a handler raises there (the driver's
``StopRequested``, ``KeyboardInterrupt``) comes out of Ray's C++ layer as a ``SystemError`` wrapping it. The
helpers re-raise the handler's own exception, so that callers see the stop, not a Ray error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ray

SLICE_S = 1.0  # longest stretch the driver spends inside Ray without running its signal handlers


def wait_any(refs: Iterable[ray.ObjectRef], slice_s: float = SLICE_S) -> ray.ObjectRef:
    """The first of ``refs`` that is ready (waits in slices of ``slice_s`` seconds)."""
    pending = list(refs)
    if not pending:
        raise ValueError("wait_any: nothing to wait for")
    while True:
        try:
            ready, _ = ray.wait(pending, num_returns=1, timeout=slice_s)
        except SystemError as exc:
            raise _handler_exception(exc) from None
        if ready:
            return ready[0]


def _handler_exception(exc: SystemError) -> BaseException:
    """The exception a signal handler raised inside Ray's wait (a BaseException that is not an Exception)."""
    inner = exc.__cause__ or exc.__context__
    if isinstance(inner, BaseException) and not isinstance(inner, Exception):
        return inner
    return exc


def get(ref: ray.ObjectRef, slice_s: float = SLICE_S) -> Any:
    """``ray.get`` of one reference, waiting in slices of ``slice_s`` seconds."""
    return ray.get(wait_any([ref], slice_s))
