"""The Actor type's narrowing: only a signed-in user is ever the person behind an actor."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from agents import services
from agents.actors import person_of, user_of
from agents.authentication import ApiKeyPrincipal
from agents.models import AuditEvent


def test_only_a_signed_in_user_is_the_person_behind_an_actor(owner, workspace):
    key, _ = services.create_api_key(workspace=workspace, name="ci", created_by=owner)
    assert user_of(owner) == owner
    assert user_of(key) is None
    assert user_of(ApiKeyPrincipal(key)) is None  # DRF's request.user for a key's request
    assert user_of(AnonymousUser()) is None
    assert user_of(None) is None  # the system


def test_a_key_creating_a_key_stores_no_person_and_the_log_names_the_key(workspace, owner):
    parent, _ = services.create_api_key(workspace=workspace, name="parent", created_by=owner)
    key, _ = services.create_api_key(
        workspace=workspace, name="child", created_by=ApiKeyPrincipal(parent)
    )
    key.refresh_from_db()
    assert key.created_by is None
    event = AuditEvent.objects.get(action="api_key.create", target_id=str(key.pk))
    assert (event.actor, event.actor_label) == (None, f"api-key:{parent.prefix}")


def test_a_page_request_without_a_signed_in_person_is_refused(owner):
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    with pytest.raises(PermissionDenied):
        person_of(request)
    request.user = owner
    assert person_of(request) == owner
