"""Who acts: the one type of every people parameter (`actor`, `reviewer`, `author`, `by`, …).

An actor is a signed-in user, an API key (`Principal.actor` of a key's request; DRF's
`request.user` is then the key's `ApiKeyPrincipal`), an anonymous visitor, or `None` for the
system (beat, the canary, a webhook). Where only a person will do — who decides, edits,
comments or is assigned — the parameter is a `Person`; `user_of` and `person_of` narrow to one.
"""

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User  # User: settings.AUTH_USER_MODEL
    from django.http import HttpRequest

    from agents.authentication import ApiKeyPrincipal
    from agents.models import ApiKey

type Person = User
type Actor = Person | AnonymousUser | ApiKey | ApiKeyPrincipal | None


def user_of(actor: Actor) -> "Person | None":
    """The person behind an actor, for a foreign key; None for API keys, the system and
    anonymous callers."""
    return actor if isinstance(actor, get_user_model()) and actor.is_authenticated else None


def person_of(request: "HttpRequest") -> "Person":
    """The signed-in person of a `login_required` page."""
    person = user_of(request.user)
    if person is None:
        raise PermissionDenied("Sign in as a member first.")
    return person
