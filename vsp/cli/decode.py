"""`vsp decode`: the property x layer x fold decoding grid, its Parquet results and Figures 1-2."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import (
    Address,
    NoRay,
    app,
    check_choice,
    check_int,
    check_number,
    check_seed,
    check_store,
    csv_list,
    run_stages,
)
from vsp.errors import VspInputError


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
    C_grid: Annotated[
        str | None,
        typer.Option("--C-grid", help="Comma-separated Cs: choose C per property and fold by nested CV."),
    ] = None,
    inner_folds: Annotated[int, typer.Option(help="Inner folds of the nested CV (--C-grid).")] = 3,
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    float64: Annotated[bool, typer.Option("--float64", help="Solve in float64 (default float32).")] = False,
    repeats: Annotated[
        int, typer.Option(help="Repeats of the stratified folds (repeat 0 is --seed's; others derived).")
    ] = 1,
    permutations: Annotated[
        int, typer.Option(help="Label permutations per layer for p-values, BH and max-statistic (0: none).")
    ] = 0,
    control: Annotated[
        str, typer.Option(help="'random': also decode a random-weight twin and write the selectivity.")
    ] = "none",
    control_seed: Annotated[
        int | None, typer.Option(help="Weight seed of the random control (default: derived).")
    ] = None,
    fdr: Annotated[float, typer.Option(help="False discovery rate of the decodable marks.")] = 0.05,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of every interval.")] = 2000,
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
    grid = None
    if C_grid:
        try:
            grid = [float(c) for c in csv_list(C_grid)]
        except ValueError:
            raise VspInputError(f"--C-grid: must be comma-separated numbers, got {C_grid!r}") from None
        for c in grid:
            check_number("--C-grid", c, positive=True)
        check_int("--inner-folds", inner_folds, 2, folds - 1)
    check_int("--repeats", repeats, 1)
    check_int("--permutations", permutations, 0)
    check_choice("--control", control, ("none", "random"))
    if control_seed is not None:
        check_seed("--control-seed", control_seed, weights=True)
    check_int("--bootstrap", bootstrap, 100)
    if not 0 < check_number("--fdr", fdr, positive=True) < 1:
        raise VspInputError(f"--fdr: must be between 0 and 1, got {fdr}")
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
            **({"C_grid": grid, "inner_folds": inner_folds} if grid else {}),
            "repeats": repeats,
            "permutations": permutations,
            "control": control,
            **({"control_seed": control_seed} if control_seed is not None else {}),
            "fdr": fdr,
            "bootstrap": bootstrap,
        },
    }
    _, counts = run_stages(doc, ["decode"], address=address, no_ray=no_ray, source="vsp decode")
    typer.echo(counts["decode"]["summary"])
    print_summary_table(store)


def print_summary_table(store: str) -> None:
    """Mean F1 x 100 per feature class of each network's best and penultimate layers (with intervals)."""
    from vsp.decode.inference import read_inference
    from vsp.decode.stage import summary_table
    from vsp.io.store import open_store

    st = open_store(store)
    typer.echo(summary_table(st))
    titles = {
        "intervals": "mean F1 x 100 [95% bootstrap interval over properties]",
        "significance": "properties decodable per layer (permutation p-values)",
        "selectivity": "selectivity: F1 x 100 minus the random-weight network's",
    }
    for name, df in read_inference(st).items():
        if name == "significance":
            df = df.sort_values(df.columns[4], ascending=False).groupby("model", sort=False).head(3)
        typer.echo(f"\n{titles[name]}\n" + df.to_string(index=False))
