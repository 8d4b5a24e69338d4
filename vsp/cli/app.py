"""The `vsp` Typer application and the helpers every command shares."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vsp.cli.errors import EXIT_CODES, EXIT_INPUT, EXIT_INTERNAL, describe, one_line
from vsp.errors import VspInputError

_VERBOSE = "vsp.verbose"  # ctx.meta key set by the -v callback


class VspGroup(TyperGroup):
    """The root command group: whatever a command raises becomes one line on stderr and an exit code.

    `vsp.cli.errors.describe` picks the message and the code (`EXIT_CODES`); a usage error (bad option value,
    unknown option) is one line with exit 2; ``-v`` also prints the traceback.
    """

    def invoke(self, ctx: Any) -> Any:
        """Run the command; turn any exception into ``error: <cause and what to do>`` and its exit code."""
        cx = _click_exceptions()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, cx.Exit, cx.Abort, cx.NoArgsIsHelpError):
            raise
        except cx.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            _error(f"{one_line(exc.format_message())} (see '{where} --help')")
            raise typer.Exit(EXIT_INPUT) from None
        except cx.ClickException:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure gets its one line
            code, msg = describe(exc)
            verbose = bool(ctx.meta.get(_VERBOSE))
            if verbose:
                traceback.print_exception(exc, file=sys.stderr)
            elif code == EXIT_INTERNAL:
                msg += " (rerun with -v for the traceback)"
            _error(msg)
            raise typer.Exit(code) from None


def _click_exceptions() -> Any:
    """The click exception classes Typer raises (recent Typer releases vendor click as ``typer._click``)."""
    import types

    try:
        from typer._click import exceptions as cx
    except ImportError:  # an older typer on the real click
        from click import exceptions as cx
    names = ("Exit", "Abort", "NoArgsIsHelpError", "UsageError", "ClickException")
    never = type("_Never", (Exception,), {})  # a class nothing raises, for names this version lacks
    return types.SimpleNamespace(**{n: getattr(cx, n, never) for n in names})


def _error(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)


app = typer.Typer(
    cls=VspGroup,
    add_completion=False,
    no_args_is_help=True,
    help=(
        "vsp: which human semantic knowledge each layer of an image network encodes.\n\n"
        "Examples:\n\n"
        "  vsp demo --out demo-run\n\n"
        "  vsp norms --norms ../shared/data/cslb/norms.dat --json\n\n"
        "  vsp images validate --images photos/ --norms norms.dat\n\n"
        "  vsp extract --images photos/ --store s3://bucket/run1 --weights imagenet\n\n"
        "  vsp decode --store s3://bucket/run1 --norms norms.dat\n\n"
        "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."
    ),
)
images_app = typer.Typer(no_args_is_help=True, help="Image manifests: build and validate.")
app.add_typer(images_app, name="images")

DEFAULT_MODELS = "alexnet,vgg16,resnet34,densenet169"


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress details; print the traceback of an error.")
    ] = False,
) -> None:
    ctx.meta[_VERBOSE] = verbose
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def csv_list(value: str | None, kind: type = str, option: str = "") -> tuple | None:
    """A comma-separated option as a tuple (blanks dropped, items converted by ``kind``); None if unset.

    An item ``kind`` cannot convert is a VspInputError naming ``option``.
    """
    if not value:
        return None
    items = [x.strip() for x in value.split(",") if x.strip()]
    try:
        return tuple(kind(x) for x in items)
    except ValueError:
        what = {int: "integers", float: "numbers"}.get(kind, f"{kind.__name__} values")
        raise VspInputError(f"{option or 'option'}: must be comma-separated {what}, got {value!r}") from None


def fail(msg: str, code: int = 2) -> None:
    """Print an error to stderr and exit with ``code`` (`vsp.cli.errors.EXIT_CODES`)."""
    _error(one_line(msg))
    raise typer.Exit(code)


# --- option checks: the same rules (and messages) as the run file's keys, named by the option ---------------


def check_int(option: str, value: int, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer option within [minimum, maximum]; VspInputError naming the option (exit 2)."""
    from vsp.config import check_int as check

    return check(option, value, minimum, maximum)


def check_seed(option: str, value: int, *, weights: bool = False) -> int:
    """A seed: 0 .. 2**32 - 1 (numpy / scikit-learn ``random_state``); 0 .. 2**63 - 1 for random weights."""
    from vsp.config import SEED_MAX, WEIGHTS_SEED_MAX

    return check_int(option, value, 0, WEIGHTS_SEED_MAX if weights else SEED_MAX)


def check_number(option: str, value: float, *, positive: bool = False, minimum: float | None = None) -> float:
    """A finite number option (> 0 with ``positive``, >= ``minimum``); VspInputError naming the option."""
    from vsp.config import check_number as check

    return check(option, value, positive=positive, minimum=minimum)


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; VspInputError naming the option."""
    if value not in choices:
        raise VspInputError(f"{option}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_weights(option: str, weights: str) -> str:
    """``imagenet`` / ``pretrained``, ``random``, an s3:// URI, or a local file that exists (checked first).

    Checked before any store is opened.
    """
    if weights in ("imagenet", "pretrained", "random") or "://" in weights:
        return weights
    p = Path(weights).expanduser()
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "no such file"
        raise VspInputError(
            f"{option} {weights}: {what}; pass imagenet (or pretrained), random, or the path or s3:// URI "
            "of a "
            "state_dict or safetensors file"
        )
    return weights


# --- stores: checked before any work, and never created by a command that only reads ------------------------


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def check_store(uri: str, *, must_exist: bool = False, option: str = "--store") -> str:
    """Fail early, in one line, on a store that cannot work; return ``uri``.

    Local: a path that is (or runs through) a file is refused; with ``must_exist`` (commands that read earlier
    results) so is a missing folder, which is then not created. S3: one small listing of the prefix, so that
    a server that is down, a missing bucket, or missing / wrong / refused credentials fail here, named by
    `vsp.cli.errors`, before any work starts.
    """
    from vsp.io.store import open_store

    text = os.fspath(uri)
    if _is_local(text):
        local = open_store(text, create=False)  # refuses a path that is, or runs through, a file
        if must_exist and not local.root.is_dir():  # type: ignore[attr-defined]
            raise VspInputError(
                f"{option} {text}: no such store folder (nothing has run there); check the path, or run the "
                "earlier stages first"
            )
        return text
    if text.startswith("s3://"):
        from vsp.io.store import S3Store

        st = open_store(text)
        if isinstance(st, S3Store):
            st.client.list_objects_v2(Bucket=st.bucket, Prefix=st.prefix, MaxKeys=1)
    return text


def open_store_checked(uri: str, *, must_exist: bool = False, read_only: bool = False):
    """`check_store`, then the store; ``read_only`` opens a local store without creating folders in it."""
    from vsp.io.store import open_store

    check_store(uri, must_exist=must_exist or read_only)
    return open_store(uri, create=False) if read_only else open_store(uri)


class Progress:
    """A tqdm bar for stages that report (done, total, count) with a rate of ``what`` per second."""

    def __init__(self, desc: str, unit: str, what: str) -> None:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=None,
            unit=unit,
            desc=desc,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2 if tty else 5.0,
        )
        self.what = what
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, count: int | None = None) -> None:
        """Report ``done`` of ``total`` units and a running count of ``what``."""
        self.bar.total = total
        if count is not None:
            rate = count / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{count} {self.what}, {rate:.1f} {self.what}/s", refresh=False)
        self.bar.update(done - self.bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        """Close the bar (leaves the last state on screen)."""
        self.bar.close()


# --- the per-stage commands: options -> a run-file dict -> the one runner (jobs.runner.run_pipeline) -------


#: Options several commands share (one declaration each).
Address = Annotated[
    str | None,
    typer.Option(help="Ray address: auto | HOST:6379 | ray://host:10001. Default: embedded local Ray."),
]
NoRay = Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")]
FollowLinks = Annotated[
    bool,
    typer.Option(
        "--follow-links", help="Use symlinks and manifest uris (..) that lead outside the image root."
    ),
]


def run_stages(
    doc: dict[str, Any],
    stages: list[str] | None = None,
    *,
    address: str | None = None,
    no_ray: bool = False,
    source: str = "",
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run ``stages`` of the run file ``doc`` (its keys as in `vsp.config`) as `vsp run` does.

    Relative paths resolve against ``base_dir`` (default: the working directory, where options are read).
    Returns the configuration and each stage's recorded counts (``summary`` among them).
    """
    from vsp.config import RunConfig

    cfg = RunConfig.from_dict(doc, base_dir=base_dir if base_dir is not None else Path.cwd(), source=source)
    record = run_with_bars(cfg, stages, address=address, no_ray=no_ray)
    return cfg, dict(record.attempt.get("stage_counts", {}))


def run_with_bars(cfg: Any, stages: list[str] | None = None, **kwargs: Any) -> Any:
    """``jobs.runner.run_pipeline`` with a progress bar per stage step (closed however the run ends)."""
    from jobs.runner import run_pipeline

    bars: list[Progress] = []

    def bar(stage: str, unit: str, what: str) -> Progress:
        bars.append(Progress(stage, unit, what))
        return bars[-1]

    try:
        return run_pipeline(cfg, stages, reporter=bar, **kwargs)
    finally:
        for b in bars:
            b.close()
