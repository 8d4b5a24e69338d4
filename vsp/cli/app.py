"""The `vsp` Typer application and the helpers every command shares."""

from __future__ import annotations

import logging
import sys
import time
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=(
        "vsp: which human semantic knowledge each layer of an image network encodes.\n\n"
        "Examples:\n\n"
        "  vsp demo --out demo-run\n\n"
        "  vsp norms --norms ../shared/data/cslb/norms.dat --json\n\n"
        "  vsp images validate --images photos/ --norms norms.dat\n\n"
        "  vsp extract --images photos/ --store s3://bucket/run1 --weights imagenet\n\n"
        "  vsp decode --store s3://bucket/run1 --norms norms.dat"
    ),
)
images_app = typer.Typer(no_args_is_help=True, help="Image manifests: build and validate.")
app.add_typer(images_app, name="images")

DEFAULT_MODELS = "alexnet,vgg16,resnet34,densenet169"


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def csv_list(value: str | None, kind: type = str) -> tuple | None:
    """A comma-separated option as a tuple (blanks dropped, items converted by ``kind``); None if unset."""
    return tuple(kind(x.strip()) for x in value.split(",") if x.strip()) if value else None


def fail(msg: str, code: int = 2) -> None:
    """Print an error to stderr and exit with ``code`` (2: bad input, 3: configuration mismatch)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


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
