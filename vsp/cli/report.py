"""`vsp report`: one self-contained HTML report of a run, with its tables as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, fail
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
        str | None, typer.Option(help="Explanation layers: 1-based conv indices or names.")
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
    from vsp.report import write_report

    try:
        result = write_report(
            store,
            out,
            norms=norms,
            min_pf=min_pf,
            min_concepts=min_concepts,
            explain_images=explain_images,
            explain_model=model,
            explain_layers=layers,
            top=top,
            device=device,
        )
    except (VspInputError, FileNotFoundError) as exc:
        fail(str(exc))
    for sid, status in result.sections.items():
        typer.echo(f"  {sid:<8} {status}")
    typer.echo(result.line())
