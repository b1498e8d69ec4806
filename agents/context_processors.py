from typing import Any

from django.conf import settings
from django.http import HttpRequest

from agents.access import current_membership, request_memberships

# Backends that are not Claude, as pages name them ("simulated model", "local model").
FREE_MODEL_LABELS = {"simulated": "simulated model", "local": "local model"}


def model_flags() -> dict[str, Any]:
    backend = settings.REVERIE_MODEL_BACKEND
    return {
        "simulated_model": backend == "simulated",
        "local_model": backend == "local",
        "free_model": FREE_MODEL_LABELS.get(backend, ""),
    }


def reverie(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_authenticated:
        return model_flags()
    membership = current_membership(request)
    return {
        **model_flags(),
        "membership": membership,
        "workspace": membership.workspace if membership else None,
        "all_memberships": request_memberships(request),
    }
