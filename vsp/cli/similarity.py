"""`vsp similarity`: MEN and SimLex-999 (or your own pairs) on every stored embedding (Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, check_store, csv_list, fail, run_stages


@app.command()
def similarity(
    store: Annotated[str, typer.Option("--store", help="Store prefix holding `vsp meta` embeddings.")],
    men: Annotated[
        str | None, typer.Option(help="MEN natural form file (default: $VSP_SHARED_DATA/men/...).")
    ] = None,
    simlex: Annotated[
        str | None, typer.Option(help="SimLex-999.txt (default: $VSP_SHARED_DATA/simlex999/...).")
    ] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra pair file ('word1 word2 score' lines, words = concept names); NAME=PATH or PATH."
        ),
    ] = None,
    embeddings: Annotated[
        str | None, typer.Option(help="Comma-separated names or patterns (default: all).")
    ] = None,
    norms: Annotated[
        str | None, typer.Option("--norms", help="CSLB norms, only to check the paper's setup.")
    ] = None,
) -> None:
    """Spearman rho of cosine similarity with human ratings, on pairs whose words are concepts (Table 3).

    With no --men/--simlex/--pairs, MEN and SimLex-999 are taken from the shared data folder
    ($VSP_SHARED_DATA, else ../shared/data next to the repository).

    Examples:
      vsp similarity --store runs/r1

      vsp similarity --store runs/r1 --men MEN_dataset_natural_form_full --simlex SimLex-999.txt

      vsp similarity --store demo-run/store --pairs demo=demo-run/world/pairs.txt
    """
    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    extra: dict[str, str] = {}
    for p in pairs or []:
        name, _, path = p.partition("=") if "=" in p else (Path(p).stem, "", p)
        extra[name] = path
    if not (men or simlex or extra):
        from vsp.similarity.stage import default_benchmarks

        if not default_benchmarks():
            fail("no benchmark files: pass --men / --simlex / --pairs, or set VSP_SHARED_DATA")
    section: dict = {}
    if men:
        section["men"] = men
    if simlex:
        section["simlex"] = simlex
    if extra:
        section["pairs"] = extra
    chosen = csv_list(embeddings)
    if chosen:
        section["embeddings"] = list(chosen)
    check_store(store, must_exist=True)  # the embeddings of `vsp meta` live there
    doc: dict = {"store": store, "stages": ["similarity"], "similarity": section}
    if norms:
        doc["norms"] = norms
    _, counts = run_stages(doc, ["similarity"], no_ray=True, source="vsp similarity")
    for line in similarity_lines(store, counts["similarity"]):
        typer.echo(line)


def similarity_lines(store: str, counts: dict) -> list[str]:
    """What `vsp similarity` prints from the recorded counts and the store: its summary and Table 3."""
    from vsp.io.store import open_store
    from vsp.similarity.stage import TABLE3_TXT

    table = open_store(store).read_bytes(TABLE3_TXT).decode("utf-8").rstrip("\n")
    return [counts["summary"], table]
