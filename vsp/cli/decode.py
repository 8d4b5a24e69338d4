"""`vsp decode`: the property x layer x fold decoding grid, its Parquet results and Figures 1-2."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import (
    Address,
    NoRay,
    app,
    check_int,
    check_number,
    check_seed,
    check_store,
    csv_list,
    run_stages,
)


@app.command()
def decode(
    store: Annotated[str, typer.Option("--store", help="Store prefix holding `vsp extract` features.")],
    norms: Annotated[str, typer.Option("--norms", help="CSLB norms.dat path or URI.")],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated models to decode (default: all in the store).")
    ] = None,
    folds: Annotated[int, typer.Option(help="Stratified folds per property.")] = 5,
    seed: Annotated[
        int, typer.Option(help="random_state of StratifiedKFold(shuffle=True) (0 .. 2**32 - 1).")
    ] = 0,
    C: Annotated[
        float, typer.Option("--C", help="Inverse L2 strength, as scikit-learn's LogisticRegression(C=...).")
    ] = 1.0,
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    float64: Annotated[bool, typer.Option("--float64", help="Solve in float64 (default float32).")] = False,
    address: Address = None,
    no_ray: NoRay = False,
) -> None:
    """Decode every property from every layer with class-weighted L2 logistic regression, F1 per fold.

    Example: vsp decode --store runs/r1 --norms ../shared/data/cslb/norms.dat --models resnet34
    """
    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    check_int("--folds", folds, 2)
    check_seed("--seed", seed)
    check_number("--C", C, positive=True)
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    check_store(store, must_exist=True)  # the features of `vsp extract` live there
    chosen = csv_list(models)
    doc = {
        "store": store,
        "norms": {"path": norms, "min_pf": min_pf, "min_concepts": min_concepts},
        "stages": ["decode"],
        "decode": {
            "folds": folds,
            "seed": seed,
            "C": C,
            "dtype": "float64" if float64 else "float32",
            **({"models": list(chosen)} if chosen else {}),
        },
    }
    _, counts = run_stages(doc, ["decode"], address=address, no_ray=no_ray, source="vsp decode")
    typer.echo(counts["decode"]["summary"])
    print_summary_table(store)


def print_summary_table(store: str) -> None:
    """Mean F1 x 100 per feature class of each network's best layer and its penultimate layer."""
    from vsp.decode.stage import summary_table
    from vsp.io.store import open_store

    typer.echo(summary_table(open_store(store)))
