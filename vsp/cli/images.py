"""`vsp images validate`: every image decodes, and image concepts match the norms."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vsp.cli.app import FollowLinks, images_app


@images_app.command("validate")
def images_validate(
    images: Annotated[
        str,
        typer.Option(
            "--images", help="Folder tree <root>/<concept>/<files>, s3:// prefix, or CSV/Parquet manifest."
        ),
    ],
    norms: Annotated[
        str | None, typer.Option("--norms", help="Norms file: report concepts missing on either side.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    follow_links: FollowLinks = False,
) -> None:
    """Check that every image decodes and that image concepts match the norms; exit 1 on problems.

    Example: vsp images validate --images photos/ --norms ../shared/data/cslb/norms.dat
    """
    from vsp.data.images import build_manifest, validate

    # errors (bad input 2, storage 4) become one line in vsp.cli.app
    manifest = build_manifest(images, follow_links=follow_links)
    concepts = None
    if norms:
        from vsp.data.norms import load_cslb

        concepts = load_cslb(norms).concepts
    report = validate(manifest, concepts)
    typer.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.to_text())
    if not report.ok:
        raise typer.Exit(1)
