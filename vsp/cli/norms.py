"""`vsp norms`: counts after filtering, per feature class and fine-grained type."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vsp.cli.app import app, fail
from vsp.errors import VspInputError


@app.command()
def norms(
    norms: Annotated[str, typer.Option("--norms", help="CSLB norms.dat (or McRae .xlsx) path or URI.")],
    min_pf: Annotated[
        float, typer.Option(help="Keep (concept, property) pairs with production frequency >= N.")
    ] = 5,
    min_concepts: Annotated[int, typer.Option(help="Keep properties that occur for >= N concepts.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count concepts and properties after filtering, per feature class and fine-grained type.

    Example: vsp norms --norms ../shared/data/cslb/norms.dat --json
    """
    from vsp.norms import load_cslb, load_mcrae, summary

    try:
        loader = load_mcrae if str(norms).endswith(".xlsx") else load_cslb
        s = summary(loader(norms, min_pf=min_pf, min_concepts=min_concepts))
    except (VspInputError, FileNotFoundError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(
        f"{s['concepts']} concepts x {s['properties']} properties "
        f"(pf >= {min_pf:g}, >= {min_concepts} concepts)"
    )
    typer.echo("feature classes: " + ", ".join(f"{k} {v}" for k, v in s["feature_classes"].items()))
    typer.echo("fine-grained:    " + ", ".join(f"{k} {v}" for k, v in s["fine_grained"].items()))
