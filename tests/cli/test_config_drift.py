"""Every CLI option that sets a stage setting has the default of the stage's Config (the only declaration).

Options are read from the click command Typer builds (``typer.main.get_command``); an option matches a Config
field by its parameter name (dashes as underscores) or by the field's run-file ``key`` (``--mlp-wd``).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import typer

from vsp.cli import app
from vsp.config import NormsSpec, field_default, setting_key
from vsp.decode.stage import DecodeConfig
from vsp.extract.features import ExtractionConfig
from vsp.mapping.stage import MappingConfig
from vsp.meta.stage import MetaConfig
from vsp.report.config import ReportConfig
from vsp.similarity.stage import SimilarityConfig

ALL = (ExtractionConfig, DecodeConfig, MetaConfig, MappingConfig, SimilarityConfig, ReportConfig, NormsSpec)

#: command -> the Configs whose settings its options set
COMMANDS: dict[str, tuple[type, ...]] = {
    "extract": (ExtractionConfig, NormsSpec),
    "decode": (DecodeConfig, NormsSpec),
    "meta": (MetaConfig, NormsSpec),
    "map": (MappingConfig, NormsSpec),
    "similarity": (SimilarityConfig, NormsSpec),
    "report": (ReportConfig, NormsSpec),
    "run": ALL,
}

#: (command, option) whose default cannot be the Config's constant, and why
EXEMPT = {
    # the run file's default is <store>/report.html (local store), which depends on the store; the command
    # writes report.html in the working folder
    ("report", "out"),
}


def _normalise(value: Any) -> Any:
    """CLI spellings as the Config holds them: 'a,b' -> ('a', 'b'); 'none', 'auto' -> None; paths as text."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        if value.lower() in ("none", "auto"):
            return None
        if "," in value:
            return tuple(v.strip() for v in value.split(","))
    if isinstance(value, list):
        return tuple(value)
    return value


def _same(cli: Any, config: Any) -> bool:
    if cli == config:  # the same text (a choice spelled "none" stays a choice)
        return True
    cli = _normalise(cli)
    if isinstance(config, tuple) and isinstance(cli, str):
        cli = (cli,)
    if isinstance(config, tuple) and isinstance(cli, tuple):
        return tuple(map(str, cli)) == tuple(map(str, config))
    return cli == config


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]


def _matches(name: str) -> list[tuple[str, Any, type, Any]]:
    """(option, CLI default, Config, field) for every option of ``name`` named like a Config field."""
    out = []
    for param in _command(name).params:
        if not getattr(param, "param_type_name", "") == "option" or param.name is None:
            continue
        for cls in COMMANDS[name]:
            for f in fields(cls):
                if param.name in (f.name, setting_key(f)) or param.name.replace("-", "_") == f.name:
                    out.append((param.name, param.default, cls, f))
    return out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_are_the_config_defaults(command):
    drift = []
    for option, cli_default, cls, f in _matches(command):
        if (command, option) in EXEMPT:
            continue
        want = field_default(f)
        if not _same(cli_default, want):
            drift.append(f"vsp {command} --{option}: CLI {cli_default!r}, {cls.__name__}.{f.name} {want!r}")
    assert not drift, "\n".join(drift)


@pytest.mark.parametrize("command", ["extract", "decode", "meta", "map", "similarity", "report"])
def test_each_stage_command_sets_stage_settings(command):
    """The test is not empty: every stage command has options that match its Config."""
    stage_cls = COMMANDS[command][0]
    matched = [m for m in _matches(command) if m[2] is stage_cls]
    assert matched, f"vsp {command}: no option matches {stage_cls.__name__}"


def test_decode_float64_flag_is_the_dtype_default():
    (param,) = [p for p in _command("decode").params if p.name == "float64"]
    assert (DecodeConfig().dtype == "float64") is param.default


def test_weights_default_is_imagenet_everywhere():
    from vsp.config import RunConfig

    (param,) = [p for p in _command("extract").params if p.name == "weights"]
    run = RunConfig.from_dict({"store": "/tmp/s", "stages": ["meta"]})
    assert param.default == ExtractionConfig().weights == run.extract.weights == "imagenet"


def test_mlp_weight_decay_key_is_the_cli_option():
    (f,) = [f for f in fields(MappingConfig) if f.name == "mlp_weight_decay"]
    assert setting_key(f) == "mlp_wd"
    assert any(p.name == "mlp_wd" for p in _command("map").params)
