"""`vsp explain`: top predicted semantic properties of one image at chosen layers (paper Figures 3-7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import app, check_choice, check_int, check_number, open_store_checked
from vsp.errors import VspInputError


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
            help="0-based tap indices (layer_index of the decode results, the x axis of Figures 1-2) "
            "and/or module names, e.g. 3,15,27,35 or layer1.0.conv1,penultimate."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Properties listed per layer.")] = 10,
    out: Annotated[
        Path | None, typer.Option(help="PNG figure path (default: <image stem>_explain.png).")
    ] = None,
    train_on: Annotated[
        str,
        typer.Option(
            "--train-on",
            "--source",
            help="Train the ridge maps on the concept vectors (concepts, as the paper's Appendix B) "
            "or on every image's vector (images).",
        ),
    ] = "concepts",
    alpha: Annotated[
        str, typer.Option(help="Ridge strength, or 'auto' (grouped CV over concepts).")
    ] = "auto",
    min_pf: Annotated[float, typer.Option(help="Norms filter: production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Norms filter: properties of >= N concepts.")] = 5,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
) -> None:
    """Predict an image's semantic properties per layer with ridge maps trained on the run's features.

    Layers are 0-based tap indices, the layer_index of the decode results and the x axis of Figures 1-2
    (with `--layers all-conv`, ResNet34's 36 convs in module order, its three 1x1 downsample convs included:
    the paper's Appendix B layers 3,15,27,35, the default, end at 35 = layer4.2.conv2), or module names, or
    `penultimate`; each is shown with its module, e.g. "35 (layer4.2.conv2)". The ridge maps are trained on
    the concept vectors (--train-on images: on every image's vector), fitted once and cached in the store
    (explain/<model>/<layer>.npz); the explanation is also recorded under explain/examples/ for `vsp report`.

    Example: vsp explain car.jpg --store runs/r1 --norms ../shared/data/cslb/norms.dat --model resnet34
    --layers 3,15,27,35 --top 10 --out car_explain.png
    """
    from vsp.data.norms import load_cslb
    from vsp.report.explain import TRAIN_ON, explain_images, figure_bytes, save_example

    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    check_int("--top", top, 1)
    check_choice("--train-on", train_on, TRAIN_ON)
    check_choice("--device", device, ("cpu", "cuda", "auto"))
    check_number("--min-pf", min_pf, minimum=0)
    check_int("--min-concepts", min_concepts, 1)
    a: float | str = "auto"
    if alpha != "auto":
        try:
            a = float(alpha)
        except ValueError:
            raise VspInputError(f"--alpha: must be 'auto' or a number > 0, got {alpha!r}") from None
        check_number("--alpha", a, positive=True)
    if device == "auto":
        from vsp.stage import pick_device

        device = pick_device()
    st = open_store_checked(store, must_exist=True)  # the features of `vsp extract` live there
    norms_path = norms or norms_from_store(st)
    if norms_path is None:
        raise VspInputError("pass --norms (no `vsp decode` run in this store records which norms it used)")
    nm = load_cslb(norms_path, min_pf=min_pf, min_concepts=min_concepts)
    (expl,) = explain_images(
        st, nm, [image], model=model, layers=layers, top=top, train_on=train_on, alpha=a, device=device
    )
    png = figure_bytes(expl)
    target = out or Path(f"{Path(image).stem}_explain.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    key = save_example(st, expl, png)
    if as_json:
        typer.echo(json.dumps(expl.to_json(), indent=2))
    else:
        typer.echo(expl.to_text())
    typer.echo(f"figure: {target}  (recorded in {st.key_uri(key)}.png)", err=as_json)
