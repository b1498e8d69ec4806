from typing import Any

from django.conf import settings
from django.http import HttpRequest

from agents.access import current_membership, request_memberships


def reverie(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_authenticated:
        return {"simulated_model": settings.REVERIE_MODEL_BACKEND == "simulated"}
    membership = current_membership(request)
    return {
        "simulated_model": settings.REVERIE_MODEL_BACKEND == "simulated",
        "membership": membership,
        "workspace": membership.workspace if membership else None,
        "all_memberships": request_memberships(request),
    }
