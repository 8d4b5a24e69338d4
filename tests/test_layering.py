"""The compute core never imports Ray: every piece must run in a notebook and a unit test without it."""

import ast
from pathlib import Path

VSP = Path(__file__).resolve().parents[1] / "vsp"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_core_module_imports_ray_or_cluster():
    offenders = {}
    for path in sorted(VSP.rglob("*.py")):
        if path.parent.name == "cli":  # the CLI may reach the Ray layer lazily, inside commands
            continue
        bad = imported_modules(path) & {"ray", "cluster", "jobs"}
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_cli_imports_ray_only_inside_functions():
    for path in sorted((VSP / "cli").glob("*.py")):
        top = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert not top & {"ray", "cluster"}, path.name
