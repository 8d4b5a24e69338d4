"""`vsp run`, `vsp submit`, `vsp status`, `vsp logs`: the pipeline from one configuration, here or on Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import NoRay, app, check_store, check_weights, csv_list, fail, open_store_checked
from vsp.errors import VspInputError

JOBS_API = "http://127.0.0.1:8265"
AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        help="Jobs API of the Ray head (its dashboard): http://HEAD:8265.",
    ),
]


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run configuration (YAML, TOML or JSON).")],
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join: auto | HOST:6379 | ray://HOST:10001. Default: $RAY_ADDRESS, embedded."
        ),
    ] = None,
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the configuration's stages.")
    ] = None,
    no_ray: NoRay = False,
) -> None:
    """Run the pipeline a configuration describes, with this process as the driver.

    Example: vsp run run.yaml   |   vsp run run.yaml --address 127.0.0.1:6379 --stages extract
    """
    from jobs.runner import run_pipeline
    from vsp.config import load_run_config
    from vsp.io.store import open_store
    from vsp.runrecord import format_progress, store_progress

    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    cfg = load_run_config(config)
    chosen = csv_list(stages)
    if "extract" in (chosen or cfg.stages):
        check_weights("extract.weights", cfg.extract.weights)
    check_store(cfg.store, option="store")
    run_pipeline(cfg, chosen, address=address, no_ray=no_ray)
    typer.echo(format_progress(store_progress(open_store(cfg.store))))


@app.command()
def submit(
    config: Annotated[Path, typer.Argument(help="Run configuration (YAML, TOML or JSON).")],
    address: AddressOpt = JOBS_API,
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the configuration's stages.")
    ] = None,
    working_dir: Annotated[
        bool,
        typer.Option(
            "--working-dir/--installed", help="Ship this project folder, or use the vsp in the image."
        ),
    ] = True,
    pip: Annotated[
        list[str] | None, typer.Option("--pip", help="Extra pip requirement for the job (repeatable).")
    ] = None,
    submission_id: Annotated[
        str | None, typer.Option(help="Choose the submission id (default: generated).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the job's logs until it ends.")] = False,
) -> None:
    """Submit the pipeline to a Ray cluster through the Jobs API and print the submission id.

    Example: vsp submit --address http://127.0.0.1:8265 run.yaml   then   vsp status raysubmit_...
    """
    from cluster import jobs_client
    from vsp.config import load_run_config

    try:
        cfg = load_run_config(config)
        sid = jobs_client.submit(address, cfg, csv_list(stages), working_dir, pip or (), submission_id)
    except (VspInputError, FileNotFoundError) as exc:
        fail(str(exc))
    except (ConnectionError, RuntimeError) as exc:
        fail(f"could not submit to {address}: {exc}")
    typer.echo(sid)
    if follow:
        final = jobs_client.follow(address, sid, lambda s: typer.echo(s, nl=False))
        typer.echo(f"{sid}: {final}")
        if final != "SUCCEEDED":
            raise typer.Exit(1)


@app.command()
def status(
    submission_id: Annotated[
        str | None, typer.Argument(help="A submission id printed by `vsp submit`.")
    ] = None,
    address: AddressOpt = JOBS_API,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Report a store prefix instead: which units of which stages are done."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="With --store: re-read every unit's data and check it against its marker."
        ),
    ] = False,
) -> None:
    """The state of a submitted job, or of a store prefix (units done per stage, from their markers).

    Examples: vsp status raysubmit_abc --address http://127.0.0.1:8265   |   vsp status --store s3://vsp/runs/demo
    |   vsp status --store runs/r1 --verify
    """
    if store:
        from vsp.runrecord import format_progress, store_progress

        opened = open_store_checked(store, read_only=True)  # never creates the folder
        progress = store_progress(opened)
        if verify:
            from vsp.runrecord import verify_store

            progress["verified"] = verify_store(opened)
        typer.echo(json.dumps(progress, indent=1) if as_json else format_progress(progress))
        if verify and not as_json:
            v = progress["verified"]
            if v["mismatched"]:
                bad = ", ".join(v["mismatched"][:10])
                typer.echo(
                    f"verify: {len(v['mismatched'])} of {v['checked']} units differ from their markers; "
                    f"delete those markers and rerun to redo them: {bad}"
                )
            else:
                typer.echo(f"verify: all {v['checked']} units re-read and equal to their markers")
        if verify and progress["verified"]["mismatched"]:
            raise typer.Exit(1)
        return
    if not submission_id:
        fail("give a SUBMISSION_ID (with --address) or --store URI")
    from cluster import jobs_client

    try:
        info = jobs_client.job_info(address, submission_id)
    except (ConnectionError, RuntimeError) as exc:
        fail(f"{address}: {exc}")
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
    else:
        typer.echo(
            f"{submission_id}: {info['status']}" + (f" ({info['message']})" if info["message"] else "")
        )
    if info["status"] in ("FAILED", "STOPPED"):
        raise typer.Exit(1)


@app.command()
def logs(
    submission_id: Annotated[str, typer.Argument(help="A submission id printed by `vsp submit`.")],
    address: AddressOpt = JOBS_API,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """Print the logs of a submitted job's driver.

    Example: vsp logs raysubmit_abc --address http://127.0.0.1:8265 --follow
    """
    from cluster import jobs_client

    try:
        if follow:
            jobs_client.follow(address, submission_id, lambda s: typer.echo(s, nl=False))
        else:
            typer.echo(jobs_client.job_logs(address, submission_id), nl=False)
    except (ConnectionError, RuntimeError) as exc:
        fail(f"{address}: {exc}")
