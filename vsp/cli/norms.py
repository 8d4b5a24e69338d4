"""`vsp norms`: counts after filtering, per feature class and fine-grained type."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vsp.cli.app import app, check_int, check_number


@app.command()
def norms(
    norms: Annotated[str, typer.Option("--norms", help="CSLB norms.dat (or McRae .xlsx) path or URI.")],
    min_pf: Annotated[
        float, typer.Option(help="Keep (concept, property) pairs with production frequency >= N.")
    ] = 5,
    min_concepts: Annotated[int, typer.Option(help="Keep properties that occur for >= N concepts.")] = 5,
    colour_words: Annotated[
        str | None,
        typer.Option(
            "--colour-words",
            help="File of the properties of fine-grained type colour, one per line "
            "(default: the authors' 16). CSLB norms only.",
        ),
    ] = None,
    shape_words: Annotated[
        str | None,
        typer.Option(
            "--shape-words",
            help="File of the properties of fine-grained type shape/size, one per line "
            "(default: the authors' 13). CSLB norms only.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count concepts and properties after filtering, per feature class and fine-grained type.

    Fine-grained types colour and shape/size are the visual perceptual properties named in the colour and
    shape/size vocabularies (the authors' lists unless --colour-words / --shape-words give files).

    Example: vsp norms --norms ../shared/data/cslb/norms.dat --json
    """
    from vsp.data.norms import load_cslb, load_mcrae, summary
    from vsp.errors import VspInputError

    # errors (bad input 2, storage 4) become one line in vsp.cli.app
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    if str(norms).endswith(".xlsx"):
        if colour_words or shape_words:
            raise VspInputError(
                "--colour-words / --shape-words: only for CSLB norms (McRae's colour type is its BR_Label)"
            )
        loaded = load_mcrae(norms, min_pf=min_pf, min_concepts=min_concepts)
    else:
        loaded = load_cslb(
            norms,
            min_pf=min_pf,
            min_concepts=min_concepts,
            colour_vocabulary=colour_words,
            shape_vocabulary=shape_words,
        )
    s = summary(loaded)
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(
        f"{s['concepts']} concepts x {s['properties']} properties "
        f"(pf >= {min_pf:g}, >= {min_concepts} concepts)"
    )
    typer.echo("feature classes: " + ", ".join(f"{k} {v}" for k, v in s["feature_classes"].items()))
    typer.echo("fine-grained:    " + ", ".join(f"{k} {v}" for k, v in s["fine_grained"].items()))
