"""Every environment variable that config/settings.py reads is documented in README.md."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# env_str("NAME", ...), env_bool(\n    "NAME", ...), os.environ.get("NAME"), os.getenv("NAME")
READ_PATTERN = re.compile(
    r"""(?:\benv_[a-z]+|os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']"""
)


def variables_read_by_settings() -> set[str]:
    return set(READ_PATTERN.findall((ROOT / "config" / "settings.py").read_text()))


def test_the_pattern_finds_the_settings_variables():
    found = variables_read_by_settings()

    # A guard against a regex that silently matches nothing (the list only grows).
    assert {"DATABASE_URL", "REDIS_URL", "REVERIE_MODEL_BACKEND", "REVERIE_RUN_MAX_BYTES"} <= found


def test_every_settings_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", readme))

    missing = sorted(variables_read_by_settings() - documented)

    assert not missing, f"document these in README.md (as `NAME`): {', '.join(missing)}"
