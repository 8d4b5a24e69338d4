"""`vsp similarity`: MEN and SimLex-999 (or your own pairs) on every stored embedding (Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, check_store, csv_list, fail


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
    from vsp.data.norms import load_cslb

    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    benches: dict[str, str] = {}
    if men:
        benches["MEN"] = men
    if simlex:
        benches["SimLex-999"] = simlex
    for p in pairs or []:
        name, _, path = p.partition("=") if "=" in p else (Path(p).stem, "", p)
        benches[name] = path
    if not benches:
        from vsp.similarity.stage import default_benchmarks

        benches = {k: str(v) for k, v in default_benchmarks().items()}
        if not benches:
            fail("no benchmark files: pass --men / --simlex / --pairs, or set VSP_SHARED_DATA")
    nm = load_cslb(norms) if norms else None
    check_store(store, must_exist=True)  # the embeddings of `vsp meta` live there
    for line in run_sim(store, benches, nm, csv_list(embeddings)):
        typer.echo(line)


def run_sim(store: str, benchmarks: dict, norms=None, patterns: list[str] | None = None) -> list[str]:
    """Score every embedding on the benchmarks; the lines to print."""
    from vsp.io.store import open_store
    from vsp.meta.stage import paper_check
    from vsp.similarity.stage import TABLE3_TXT, run_similarity

    st = open_store(store)
    summary = run_similarity(st, benchmarks, paper_check(st, norms), patterns)
    return [summary.line(), st.read_bytes(TABLE3_TXT).decode("utf-8").rstrip("\n")]
