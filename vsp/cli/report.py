"""`vsp report`: one self-contained HTML report of a run, with its tables as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, check_choice, check_int, check_number, check_store, run_stages
from vsp.errors import VspInputError


@app.command()
def report(
    store: Annotated[
        str, typer.Option("--store", help="Store prefix of the run (local folder or s3://...).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    norms: Annotated[
        str | None, typer.Option("--norms", help="CSLB norms.dat (default: the norms `vsp decode` used).")
    ] = None,
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    explain_images: Annotated[int, typer.Option(help="Explanations to show (0: none).")] = 3,
    model: Annotated[
        str | None, typer.Option(help="Network for the explanations (default: resnet34 or the first).")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="Explanation layers: 0-based tap indices (layer_index of decode) or module names."),
    ] = None,
    top: Annotated[int, typer.Option(help="Properties per layer in the explanations.")] = 8,
    device: Annotated[str, typer.Option(help="cpu | cuda, for the explanations' forward passes.")] = "cpu",
) -> None:
    """Write one self-contained HTML report of a run, and its tables as CSV in <out stem>_tables/.

    The report holds the run manifest, Figures 1-2, Tables 1-4 (with the paper's numbers and the difference
    when the run's setup is the paper's: ImageNet weights, CSLB 638 x 390), and explanations for a few
    images. Stages without outputs show as "not run".

    Example: vsp report --store runs/r1 --out runs/r1-report.html --norms ../shared/data/cslb/norms.dat
    """
    # errors (bad input 2, storage 4) become one line in vsp.cli.app
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    check_int("--explain-images", explain_images, 0)
    check_int("--top", top, 1)
    check_choice("--device", device, ("cpu", "cuda"))
    if out.suffix.lower() not in (".html", ".htm"):
        raise VspInputError(f"--out {out}: the report is an .html file")
    check_store(store, must_exist=True)  # a report reads the run: it never creates the store
    section: dict = {"out": str(out), "explain_images": explain_images, "top": top, "device": device}
    if model:
        section["model"] = model
    if layers is not None:
        section["layers"] = layers
    doc: dict = {"store": store, "stages": ["report"], "report": section}
    if norms:
        doc["norms"] = {"path": norms, "min_pf": min_pf, "min_concepts": min_concepts}
    _, counts = run_stages(doc, ["report"], no_ray=True, source="vsp report")
    for line in report_lines(counts["report"]):
        typer.echo(line)


def report_lines(counts: dict) -> list[str]:
    """What `vsp report` prints from the stage's recorded counts: each section's status, then its summary."""
    return [*(f"  {sid:<8} {status}" for sid, status in counts["sections"].items()), counts["summary"]]
