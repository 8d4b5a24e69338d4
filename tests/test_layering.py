"""Layering: only ``cluster/`` imports Ray; no stage imports the report; the core imports no CLI.

Read from the source (``ast``), so a lazy import inside a function counts as much as a top-level one:
the rule is about which code may depend on which, not about import time.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VSP = ROOT / "vsp"
STAGE_ROOMS = ("data", "io", "extract", "decode", "meta", "mapping", "similarity")


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved within ``vsp``)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}
    return names


def offenders(paths, banned) -> dict[str, list[str]]:
    out = {}
    for path in paths:
        bad = sorted(m for m in imports(path) if any(m == b or m.startswith(b + ".") for b in banned))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def test_only_cluster_imports_ray():
    assert offenders(python_files("vsp", "jobs", "benchmarks"), ("ray",)) == {}
    assert offenders(python_files("cluster"), ("ray",)), "the check would see cluster/'s Ray imports"


def test_the_core_never_imports_the_ray_layer():
    """``vsp/`` outside the CLI never reaches ``cluster``/``jobs``: every stage runs in a notebook."""
    core = [p for p in python_files("vsp") if "cli" not in p.relative_to(VSP).parts]
    assert offenders(core, ("cluster", "jobs")) == {}


def test_no_stage_imports_the_report():
    stages = python_files(*(f"vsp/{room}" for room in STAGE_ROOMS))
    stages += [VSP / "stage.py", VSP / "pipeline.py", VSP / "runrecord.py", VSP / "linalg.py"]
    assert offenders(stages, ("vsp.report",)) == {}


def test_the_core_imports_no_cli():
    core = [p for p in python_files("vsp") if "cli" not in p.relative_to(VSP).parts]
    core += python_files("cluster")
    assert offenders(core, ("vsp.cli", "typer")) == {}


def test_the_checks_see_real_imports(tmp_path):
    """The parser resolves relative and nested imports (a check that cannot fail is no check)."""
    sample = tmp_path / "vsp" / "decode" / "probe.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from ..report import build\n    import ray.util\n")
    names = imports(sample, tmp_path)
    assert "vsp.report.build" in names and "ray.util" in names
