"""`vsp map`: zero-shot mapping from every stored embedding to the CSLB property vectors (Table 2)."""

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


@app.command("map")
def map_(
    store: Annotated[str, typer.Option("--store", help="Store prefix holding `vsp meta` embeddings.")],
    norms: Annotated[
        str, typer.Option("--norms", help="CSLB norms.dat: the PF property vectors to predict.")
    ],
    embeddings: Annotated[
        str | None,
        typer.Option(help="Comma-separated names or patterns, e.g. 'resnet34/*,glove' (default: all)."),
    ] = None,
    mappers: Annotated[str, typer.Option(help="knn, ridge, mlp (comma-separated).")] = "knn,ridge,mlp",
    repeats: Annotated[int, typer.Option(help="Repeats of the cross-validation.")] = 5,
    folds: Annotated[int, typer.Option(help="Outer folds over concepts.")] = 10,
    seed: Annotated[
        int, typer.Option(help="random_state of RepeatedKFold and the unit seeds (0 .. 2**32 - 1).")
    ] = 0,
    candidates: Annotated[
        str, typer.Option(help="Ranking candidates: all concepts | the test fold's.")
    ] = "all",
    inner_folds: Annotated[
        int, typer.Option(help="Inner CV folds for the hyper-parameter search (MAP).")
    ] = 5,
    mlp_epochs: Annotated[
        str | None, typer.Option(help="MLP epochs grid, e.g. '50,75,100' (default).")
    ] = None,
    mlp_lr: Annotated[str | None, typer.Option(help="MLP learning-rate grid (default 1e-3).")] = None,
    mlp_wd: Annotated[str | None, typer.Option(help="MLP weight-decay grid (default '0,0.01').")] = None,
    ridge_alphas: Annotated[
        str | None, typer.Option(help="Ridge alpha grid (default 0.01 ... 1000).")
    ] = None,
    folds_per_task: Annotated[
        int, typer.Option(help="Folds per task (0: 1 for the MLP, a repeat otherwise).")
    ] = 0,
    meta_fit: Annotated[
        str,
        typer.Option(
            "--meta-fit",
            help="SVD / 1ToN meta-embeddings: all = as `vsp meta` fitted them, on every concept (test "
            "concepts included; transductive) | train = refitted in each outer fold on its training concepts "
            "(inductive; needs the store's features).",
        ),
    ] = "all",
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    address: Address = None,
    no_ray: NoRay = False,
) -> None:
    """Map every embedding to the PF property vectors with kNN / ridge / MLP; Hit@1/5/10/20 (Table 2).

    Repeated k-fold CV over concepts (5 x 10 by default), hyper-parameters by inner CV on the training
    concepts. The grid runs as Ray tasks (one per MLP fold, one per embedding for kNN and ridge).

    Examples:
      vsp map --store runs/r1 --norms ../shared/data/cslb/norms.dat

      vsp map --store runs/glove --norms ../shared/data/cslb/norms.dat --mappers knn,ridge --repeats 1
    """
    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    check_int("--repeats", repeats, 1)
    check_int("--folds", folds, 2)
    check_seed("--seed", seed)
    check_choice("--candidates", candidates, ("all", "test"))
    check_int("--inner-folds", inner_folds, 2)
    check_int("--folds-per-task", folds_per_task, 0)
    check_choice("--meta-fit", meta_fit, ("all", "train"))
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    epochs = csv_list(mlp_epochs, int, "--mlp-epochs")
    for e in epochs or ():
        check_int("--mlp-epochs", e, 1)
    grids = {
        "--mlp-lr": csv_list(mlp_lr, float, "--mlp-lr"),
        "--mlp-wd": csv_list(mlp_wd, float, "--mlp-wd"),
        "--ridge-alphas": csv_list(ridge_alphas, float, "--ridge-alphas"),
    }
    for option, values in grids.items():
        decay = option == "--mlp-wd"  # weight decay may be 0; learning rates and alphas must be > 0
        for v in values or ():
            check_number(option, v, positive=not decay, minimum=0 if decay else None)
    from vsp.mapping.mappers import MAPPERS

    chosen_mappers = csv_list(mappers) or ()
    for m in chosen_mappers or ("",):
        check_choice("--mappers", m, MAPPERS)
    section: dict = {
        "mappers": list(chosen_mappers),
        "repeats": repeats,
        "folds": folds,
        "seed": seed,
        "candidates": candidates,
        "inner_folds": inner_folds,
        "folds_per_task": folds_per_task,
        "meta_fit": meta_fit,
    }
    optional = {
        "embeddings": csv_list(embeddings),
        "mlp_epochs": epochs,
        "mlp_lr": grids["--mlp-lr"],
        "mlp_wd": grids["--mlp-wd"],
        "ridge_alphas": grids["--ridge-alphas"],
    }
    section.update({key: list(v) for key, v in optional.items() if v})
    check_store(store, must_exist=True)  # the embeddings of `vsp meta` live there
    doc = {
        "store": store,
        "norms": {"path": norms, "min_pf": min_pf, "min_concepts": min_concepts},
        "stages": ["map"],
        "map": section,
    }
    _, counts = run_stages(doc, ["map"], address=address, no_ray=no_ray, source="vsp map")
    for line in map_lines(store, counts["map"]):
        typer.echo(line)


def map_lines(store: str, counts: dict) -> list[str]:
    """What `vsp map` prints from the stage's recorded counts and the store: its summary and Table 2."""
    from vsp.io.store import open_store
    from vsp.mapping.stage import TABLE2_TXT

    table = open_store(store).read_bytes(TABLE2_TXT).decode("utf-8").rstrip("\n")
    return [counts["summary"], table]
