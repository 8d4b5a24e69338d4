"""`vsp map`: zero-shot mapping from every stored embedding to the CSLB property vectors (Table 2)."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import (
    Progress,
    app,
    check_choice,
    check_int,
    check_number,
    check_seed,
    check_store,
    csv_list,
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
    address: Annotated[
        str | None, typer.Option(help="Ray address: auto | ray://host:10001. Default: embedded.")
    ] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")] = False,
) -> None:
    """Map every embedding to the PF property vectors with kNN / ridge / MLP; Hit@1/5/10/20 (Table 2).

    Repeated k-fold CV over concepts (5 x 10 by default), hyper-parameters by inner CV on the training
    concepts. The grid runs as Ray tasks (one per MLP fold, one per embedding for kNN and ridge).

    Examples:
      vsp map --store runs/r1 --norms ../shared/data/cslb/norms.dat

      vsp map --store runs/glove --norms ../shared/data/cslb/norms.dat --mappers knn,ridge --repeats 1
    """
    from vsp.data.norms import load_cslb
    from vsp.mapping.stage import MappingConfig

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
    config = MappingConfig(
        embeddings=csv_list(embeddings),
        mappers=csv_list(mappers) or (),
        repeats=repeats,
        folds=folds,
        seed=seed,
        candidates=candidates,
        inner_folds=inner_folds,
        mlp_epochs=epochs,
        mlp_lr=grids["--mlp-lr"],
        mlp_weight_decay=grids["--mlp-wd"],
        ridge_alphas=grids["--ridge-alphas"],
        folds_per_task=folds_per_task,
        meta_fit=meta_fit,
    )
    nm = load_cslb(norms, min_pf=min_pf, min_concepts=min_concepts)
    check_store(store, must_exist=True)  # the embeddings of `vsp meta` live there
    for line in run_map(store, nm, config, address, no_ray):
        typer.echo(line)


def run_map(store: str, norms, config, address: str | None = None, no_ray: bool = False) -> list[str]:
    """Run the mapping grid with a progress bar, through Ray unless ``no_ray``; the lines to print."""
    from vsp.io.store import open_store
    from vsp.mapping.stage import TABLE2_TXT
    from vsp.meta.stage import paper_check

    st = open_store(store)
    check = paper_check(st, norms)
    progress = Progress("map", "unit", "folds")
    try:
        if no_ray:
            import torch

            from vsp.mapping.stage import run_mapping_local

            device = "cuda" if torch.cuda.is_available() else "cpu"
            summary = run_mapping_local(st, norms, config, device=device, check=check, progress=progress)
        else:
            from cluster.mapping import run_mapping_ray
            from cluster.runtime import init_ray

            summary = run_mapping_ray(  # Ray starts only when a unit is pending
                st.uri, norms, config, check=check, progress=progress, connect=lambda: init_ray(address)
            )
    finally:
        progress.close()
    return [summary.line(), st.read_bytes(TABLE2_TXT).decode("utf-8").rstrip("\n")]


def run_demo_steps(out, store: str, world, norms, models, seed: int = 0, no_ray: bool = False) -> None:
    """The demo's meta, map and similarity steps (called by `vsp demo` after the decoding step).

    Lighter than the paper's setup, and says so: the mapping covers the paper's Table 2 rows (one network's
    penultimate / SVD / 1ToN, the text vectors, and their multimodal versions) with 1 x 5-fold CV and a fixed
    MLP (no inner search); the text vectors are the demo world's SYNTHETIC ones; the similarity pairs are
    SYNTHETIC ratings from the world's generating attributes (plus MEN / SimLex-999 when the shared data is
    there: the demo's concept names form almost no pair of them).
    """
    from vsp.cli.meta import run_meta
    from vsp.cli.similarity import run_sim
    from vsp.decode.stage import DecodeConfig
    from vsp.mapping.stage import MappingConfig
    from vsp.meta.stage import MetaConfig
    from vsp.similarity.stage import default_benchmarks, world_pairs

    typer.echo(f"[meta] text vectors: {world.text_vectors_path} (synthetic, 50-d; not GloVe)")
    cfg = MetaConfig(text=str(world.text_vectors_path), seed=seed)
    for line in run_meta(store, cfg, norms, DecodeConfig(seed=seed), threads=1):
        typer.echo(line)
    net = "resnet34" if "resnet34" in models else models[0]
    mcfg = MappingConfig(
        embeddings=(f"{net}/*", "text"),
        repeats=1,
        folds=5,
        seed=seed,
        mlp_epochs=(200,),
        mlp_lr=(1e-3,),
        mlp_weight_decay=(0.0,),
    )
    typer.echo(
        f"[map] demo grid (lighter than the paper's 5 x 10-fold CV): {net}/* and text embeddings, "
        "1 x 5-fold CV, MLP fixed at lr 1e-3, weight decay 0, 200 epochs (no inner search); kNN k=5; "
        "ridge alpha by inner 5-fold CV"
    )
    for line in run_map(store, norms, mcfg, no_ray=no_ray):
        typer.echo(line)
    pairs_path = world_pairs(world.spec_path, world.norms_path.parent / "pairs.txt")
    benches = {"demo-pairs": str(pairs_path), **{k: str(v) for k, v in default_benchmarks().items()}}
    typer.echo(
        f"[similarity] demo-pairs = SYNTHETIC ratings from the world's attributes ({pairs_path}); "
        + ("MEN / SimLex-999 from the shared data" if len(benches) > 1 else "MEN / SimLex-999 not found")
    )
    for line in run_sim(store, benches, norms):
        typer.echo(line)
