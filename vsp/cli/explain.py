"""`vsp explain`: top predicted semantic properties of one image at chosen layers (paper Figures 3-7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, fail
from vsp.errors import ConfigMismatchError, VspInputError


def norms_from_store(store) -> str | None:
    """The norms path recorded by `vsp decode` (``decode/manifest.json``), when that file still exists."""
    import os

    try:
        src = store.read_json("decode/manifest.json")["identity"]["norms_source"]
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None
    return src if isinstance(src, str) and (src.startswith("s3://") or os.path.exists(src)) else None


@app.command()
def explain(
    image: Annotated[str, typer.Argument(help="Image file (local path or s3:// URI).")],
    store: Annotated[str, typer.Option("--store", help="Store prefix holding `vsp extract` features.")],
    norms: Annotated[
        str | None, typer.Option("--norms", help="CSLB norms.dat (default: the norms `vsp decode` used).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Network (default: resnet34 if extracted, else the first).")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="1-based conv indices and/or module names, e.g. 3,15,27,35 or layer1.0.conv1,penultimate."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Properties listed per layer.")] = 10,
    out: Annotated[
        Path | None, typer.Option(help="PNG figure path (default: <image stem>_explain.png).")
    ] = None,
    source: Annotated[
        str, typer.Option(help="Train the maps on per-image vectors (images) or concepts.")
    ] = "images",
    alpha: Annotated[
        str, typer.Option(help="Ridge strength, or 'auto' (grouped CV over concepts).")
    ] = "auto",
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
) -> None:
    """Predict an image's semantic properties per layer with ridge maps trained on the run's features.

    Layers are 1-based conv indices in module order (`--layers all-conv` order; ResNet34 has 36 convs with its
    three 1x1 downsample convs), as in the paper's Appendix B, or module names, or `penultimate`. The maps are
    fitted once and cached in the store (explain/<model>/<layer>.npz); the explanation is also recorded under
    explain/examples/ for `vsp report`.

    Example: vsp explain car.jpg --store runs/r1 --norms ../shared/data/cslb/norms.dat --model resnet34
    --layers 3,15,27,35 --top 10 --out car_explain.png
    """
    from vsp.explain import explain_images, figure_bytes, save_example
    from vsp.norms import load_cslb
    from vsp.store import open_store

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        st = open_store(store)
        norms_path = norms or norms_from_store(st)
        if norms_path is None:
            raise VspInputError(
                "pass --norms (no `vsp decode` run in this store records which norms it used)"
            )
        a: float | str = "auto" if alpha == "auto" else float(alpha)
        nm = load_cslb(norms_path, min_pf=min_pf, min_concepts=min_concepts)
        (expl,) = explain_images(
            st, nm, [image], model=model, layers=layers, top=top, source=source, alpha=a, device=device
        )
        png = figure_bytes(expl)
        target = out or Path(f"{Path(image).stem}_explain.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
        key = save_example(st, expl, png)
    except ConfigMismatchError as exc:
        fail(str(exc), 3)
    except (VspInputError, FileNotFoundError) as exc:
        fail(str(exc))
    except ValueError as exc:  # e.g. a non-numeric --alpha
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(expl.to_json(), indent=2))
    else:
        typer.echo(expl.to_text())
    typer.echo(f"figure: {target}  (recorded in {st.key_uri(key)}.png)", err=as_json)
