"""The driver every job entry point shares: read the configuration, record the run, connect Ray, run stages.

A job's driver is the run's coordinator: it alone writes its attempt's record (``runs/attempt-<id>.json``,
from which ``run.json`` is derived: ``vsp.runrecord``), creates the stages' arrays and hands units to Ray
workers. Killing it loses no finished unit: every unit's marker is written after its data, so the next run
(``vsp run``, ``vsp submit``, ``python -m jobs.pipeline``) skips them. Ray is started (or joined) only by the
first stage that has work for it, so a rerun with nothing left to do never starts it. The driver waits on
Ray in short slices (``cluster.waiting``), so SIGTERM (``ray job stop``) is recorded within about a second.

Exit codes of ``main``: 0 done, 1 failed, 2 bad input (a file, key or value named in the message), 3 the store
prefix holds a run with a different configuration, 143 stopped by SIGTERM (``ray job stop``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vsp import pipeline
from vsp.config import RunConfig, load_from_env, load_run_config
from vsp.errors import ConfigMismatchError, VspInputError
from vsp.io.store import open_store
from vsp.runrecord import RunRecord, format_progress, store_progress
from vsp.stage import Executor, LocalExecutor, StageContext

log = logging.getLogger(__name__)


class StopRequested(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM reached the driver (``ray job stop``, a scheduler's eviction): stop and record it."""


def connect_ray(address: str | None) -> None:
    """Join ``address``, else the job's own cluster inside `ray job submit`, else start an embedded Ray."""
    from cluster.runtime import init_ray

    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"  # a Ray job's driver: RAY_ADDRESS names the cluster it was submitted to
    init_ray(address)
    if _handler_wanted:  # ray.init installs its own SIGTERM handler (sys.exit): take it back
        signal.signal(signal.SIGTERM, _on_sigterm)


def make_executor(use_ray: bool, address: str | None = None) -> Executor:
    """The one choice of where units run: Ray tasks (joined on first use) or this process."""
    if not use_ray:
        return LocalExecutor()
    from cluster.executor import RayExecutor

    return RayExecutor(lambda: connect_ray(address))


def run_stage_list(config: RunConfig) -> list[str]:
    """The configuration's stages in pipeline order."""
    return [s for s in pipeline.names() if s in config.stages]


def run_pipeline(
    config: RunConfig,
    stages: Sequence[str] | None = None,
    address: str | None = None,
    no_ray: bool = False,
    reporter: Callable[[str, str, str], Callable[..., None]] | None = None,
) -> RunRecord:
    """Run the configuration's stages (or ``stages``), in pipeline order, recording every step in run.json.

    ``reporter`` makes each stage's progress callback (``vsp.stage.StageContext.reporter``: the CLI's bars).
    """
    if stages is not None:
        config = config.with_stages(tuple(stages))
    # bad input (norms, images) is refused before anything is written
    norms = StageContext.load_norms(config)
    inputs = {name: pipeline.get(name).check_inputs(config) for name in run_stage_list(config)}
    store = open_store(config.store)
    # Ray is connected lazily (ctx.connect), by the first stage that has work for it (or an automatic
    # setting of a new store that depends on the cluster's devices)
    executor = make_executor(not no_ray, address)
    for name in run_stage_list(config):
        config = pipeline.get(name).resolve(config, store, executor)
    record = RunRecord.begin(store, config)  # refuses a prefix holding another configuration: nothing written
    log.info("run %s: stages %s (attempt %d)", store.uri, ", ".join(config.stages), record.attempt["attempt"])
    finished_any = False
    try:
        ctx = StageContext(config, store, executor, record, _norms=norms, inputs=inputs, reporter=reporter)
        for name in run_stage_list(config):
            stage = pipeline.get(name)
            record.stage_started(name)
            t0 = time.perf_counter()
            try:
                counts = stage.run(ctx)
            except BaseException as exc:
                _record(record.stage_failed, name, _describe(exc))
                raise
            log.info("%s", counts.get("summary", f"{name}: done"))
            record.stage_finished(name, time.perf_counter() - t0, counts)
            finished_any = True
    except ConfigMismatchError as exc:
        # refused by a stage's own manifest: the attempt leaves no trace unless it already finished a stage
        if finished_any:
            _record(record.finish, error=_describe(exc))
        else:
            _record(record.discard)
        raise
    except BaseException as exc:
        _record(record.finish, error=_describe(exc))
        raise
    if not no_ray and not getattr(executor, "connected", True):
        log.info("ray: not started, no stage had work for it (nothing to do)")
    record.finish()
    return record


def _record(method: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Record a failure in run.json if the store allows; it may be what failed, so keep the first error."""
    try:
        method(*args, **kwargs)
    except Exception:  # noqa: BLE001
        log.warning("could not record the failure in run.json", exc_info=True)


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the error that started it all (a Ray task error wraps the worker's exception)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def stop_requested(exc: BaseException) -> bool:
    """Whether ``exc`` is, or wraps, the SIGTERM handler's StopRequested (C code wraps it in SystemError)."""
    seen = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        if isinstance(exc, StopRequested):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _describe(exc: BaseException) -> str:
    if stop_requested(exc) or (isinstance(exc, SystemExit) and exc.code == signal.SIGTERM):
        return "stopped (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return root_cause(exc)


def load_config(path: str | None) -> RunConfig:
    """A configuration file, or (for `vsp submit` jobs) the normalised configuration in $VSP_RUN_CONFIG."""
    return load_run_config(path) if path else load_from_env()


_handler_wanted = False  # set by main(): a library caller keeps its own signal handling


def _on_sigterm(signum: int, frame: Any) -> None:
    raise StopRequested()


def main(stage: str | None = None, argv: Sequence[str] | None = None) -> int:
    """Command-line entry of ``python -m jobs.<stage>`` (``stage=None``: the whole pipeline)."""
    prog = f"python -m jobs.{stage or 'pipeline'}"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"Run {'the ' + stage + ' stage' if stage else 'every stage the configuration lists'} "
            f"of a vsp run. Example: {prog} run.yaml  |  "
            f"ray job submit --address http://HEAD:8265 --working-dir . -- {prog} run.yaml"
        ),
    )
    parser.add_argument(
        "config", nargs="?", help="run configuration (YAML/TOML/JSON); default: $VSP_RUN_CONFIG"
    )
    parser.add_argument(
        "--address",
        help="Ray address (auto, HOST:6379, ray://HOST:10001); default: the job's cluster, else embedded",
    )
    parser.add_argument("--no-ray", action="store_true", help="run in this process without Ray")
    if stage is None:
        parser.add_argument("--stages", help="comma-separated subset of the configuration's stages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    global _handler_wanted
    if threading_is_main():
        _handler_wanted = True
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = load_config(args.config)
        stages: list[str] | None = [stage] if stage else None
        if stage is None and args.stages:
            stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        run_pipeline(config, stages, address=args.address, no_ray=args.no_ray)
    except ConfigMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (VspInputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StopRequested:
        print("stopped: SIGTERM received; finished units are kept, rerun to resume", file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - report any failure in one line after its traceback
        if stop_requested(exc):  # raised by the handler inside a C extension, which wrapped it
            print("stopped: SIGTERM received; finished units are kept, rerun to resume", file=sys.stderr)
            return 143
        from vsp.cli.errors import EXIT_INTERNAL, describe

        code, msg = describe(exc)
        log.debug("run failed", exc_info=True)  # the traceback with --verbose; one line otherwise
        if code == EXIT_INTERNAL:
            log.error("run failed: %s (rerun with --verbose for the traceback)", root_cause(exc))
        print(f"error: {msg}; finished units are kept, rerun to resume", file=sys.stderr)
        return code
    print(format_progress(store_progress(open_store(config.store))))
    return 0


def threading_is_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()
