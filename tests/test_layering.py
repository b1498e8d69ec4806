"""Imports point one way, in the order of the flow: agents ← dreams ← reviews ← rollouts."""

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = ["agents", "dreams", "reviews", "rollouts"]


def _imported_apps(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(FLOW)


@pytest.mark.parametrize("app", FLOW)
def test_an_app_imports_no_app_above_it_in_the_flow(app):
    higher = set(FLOW[FLOW.index(app) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_apps(path) & higher)
        for path in (ROOT / app).rglob("*.py")
        if _imported_apps(path) & higher
    }
    assert offenders == {}


TOP_LEVEL = {
    "manage.py",
    "pyproject.toml",
    "README.md",
    "Makefile",
    "config",
    "agents",
    "dreams",
    "reviews",
    "rollouts",
    "client",
    "templates",
    "static",
    "tests",
    ".ci",
    ".gitignore",
}


def test_the_top_level_holds_only_the_apps_and_the_project_files():
    """Everything else has an owner: the CI recipe is part of the client (client/)."""
    try:
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to tell tracked files from local ones")
    assert {path.split("/")[0] for path in tracked} - TOP_LEVEL == set()
