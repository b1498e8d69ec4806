"""The write behind the cycle, rollout and stage state machines (`dreams/cycles.py`,
`rollouts/states.py`): a conditional update on the status held in memory, so of two workers
moving one row, the second loses. (Proposals lock their row instead: `dreams/proposals.py`.)"""

from typing import Any

from django.db import models


def write_status(obj: models.Model, values: dict[str, Any]) -> bool:
    """Write `values` (with the new `status`) to `obj`'s row only if its stored status is still
    `obj.status`; on success also set them on `obj`. False when another writer moved it first."""
    manager = type(obj)._default_manager
    if not manager.filter(pk=obj.pk, status=obj.status).update(**values):  # type: ignore[attr-defined]
        return False
    for name, value in values.items():
        setattr(obj, name, value)
    return True


def stored_status(obj: models.Model) -> str | None:
    """The status the database holds for `obj` now (None when the row is gone)."""
    return type(obj)._default_manager.filter(pk=obj.pk).values_list("status", flat=True).first()
