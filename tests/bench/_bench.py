"""Shared plumbing of the benchmarks: the `--smoke` size and the `name: value unit` figure lines.

Each benchmark calls `smoke_sizes(...)` before it reads its sizes from the environment, so
`python tests/bench/<name>.py --smoke` runs the same code on a tiny data set (what CI runs), and
prints each headline figure with `figure(...)`, one per line, so a script can read them back.
"""

import json
import os
import sys
from decimal import Decimal
from typing import Any

SMOKE = "--smoke" in sys.argv[1:]

# Benchmarks point DATABASE_URL at PostgreSQL (production mode), which needs a secret key, and
# talk plain HTTP on loopback. Inherited by the servers they start.
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "k" * 20 + "0123456789abcdefghijklmnop")
os.environ.setdefault("REVERIE_HTTPS", "false")


def smoke_sizes(**sizes: Any) -> None:
    """With `--smoke`, override these environment knobs (explicit env settings still win)."""
    if SMOKE:
        for key, value in sizes.items():
            os.environ.setdefault(key, str(value))


def figure(name: str, value: float | int | str, unit: str = "") -> None:
    """Print one headline figure as `name: value unit`."""
    if isinstance(value, float):
        text = (
            f"{value:.0f}"
            if abs(value) >= 100
            else f"{value:.1f}"
            if abs(value) >= 1
            else f"{value:.3g}"
        )
    else:
        text = str(value)
    print(f"{name}: {text} {unit}".rstrip(), flush=True)


def fill_column_defaults() -> None:
    """Give every NOT NULL column its model default in the database (PostgreSQL).

    The benchmarks generate data server-side with `INSERT … SELECT`, naming the columns they
    care about; a column added later then takes its model default instead of breaking the
    benchmark with a NOT NULL violation. Only ever run on a benchmark's own throwaway database.
    """
    from django.apps import apps
    from django.db import connection, models

    with connection.cursor() as cursor:
        for model in apps.get_models():
            if model._meta.managed is False or model._meta.proxy:
                continue
            table = connection.ops.quote_name(model._meta.db_table)
            for field in model._meta.concrete_fields:
                if field.null or field.primary_key:
                    continue
                if not field.has_default() and not field.empty_strings_allowed:
                    continue  # no default to give (a date, a foreign key): the INSERT names it
                value = field.get_default()
                if isinstance(field, models.JSONField):
                    literal = "'" + json.dumps(value).replace("'", "''") + "'::jsonb"
                elif isinstance(value, bool):
                    literal = "true" if value else "false"
                elif isinstance(value, int | float | Decimal):
                    literal = str(value)
                elif isinstance(value, str):
                    literal = "'" + value.replace("'", "''") + "'"
                else:
                    continue
                column = connection.ops.quote_name(field.column)
                cursor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {literal}")  # noqa: S608
