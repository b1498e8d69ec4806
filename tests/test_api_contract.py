"""What schemathesis found, pinned: input past the serializers that the columns refused (500s),
constraints the schema did not state, status codes and content types it did not document.

The bounded fuzz run itself is `bash tests/fuzz/schemathesis_run.sh` (`make fuzz`)."""

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib import admin
from django.core.management import call_command
from django.test import RequestFactory

from agents.models import Agent

pytestmark = pytest.mark.django_db


def fields_of(response: Any) -> list[str]:
    return sorted(response.json()["error"]["fields"])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"protected_sections": None}, "protected_sections"),
        ({"protected_sections": [1, 2]}, "protected_sections"),
        ({"write_tools": "issue_refund"}, "write_tools"),
        ({"rollout_stages": [50, 5]}, "rollout_stages"),
        ({"rollout_stages": [5, 25]}, "rollout_stages"),
        ({"rollout_stages": [0, 100]}, "rollout_stages"),
        ({"replay_concurrency": 0}, "replay_concurrency"),
        ({"replay_concurrency": 10_000}, "replay_concurrency"),
        ({"monthly_token_budget": 10**15}, "monthly_token_budget"),
        ({"dream_window_start": "22:00"}, "dream_window_end"),
        ({"model": 5}, "model"),
        ({"name": True}, "name"),
    ],
)
def test_agent_settings_that_would_fail_later_are_a_400_naming_the_field(
    api, agent, changes, field
):
    response = api.patch(f"/api/v1/agents/{agent.slug}", changes, format="json")

    assert response.status_code == 400, response.content
    assert fields_of(response) == [field]


def test_creating_an_agent_with_bad_settings_is_a_400_and_stores_nothing(api, agent):
    response = api.post(
        "/api/v1/agents",
        {"slug": "triage", "name": "Triage", "protected_sections": None},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert fields_of(response) == ["protected_sections"]
    assert not Agent.objects.filter(slug="triage").exists()


def test_valid_agent_settings_are_saved(api, agent):
    response = api.patch(
        f"/api/v1/agents/{agent.slug}",
        {
            "rollout_stages": [10, 50, 100],
            "dream_window_start": "22:00",
            "dream_window_end": "06:00",
            "protected_sections": ["## Refund policy"],
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert agent.rollout_stages == [10, 50, 100]


def test_the_admin_form_refuses_the_same_settings(agent, owner):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    request = RequestFactory().post("/admin/")
    request.user = owner
    model_admin = admin.site._registry[Agent]
    form_class = model_admin.get_form(request, obj=agent)
    data = {
        name: field.prepare_value(getattr(agent, name, None))
        for name, field in form_class.base_fields.items()
    }
    data.update(rollout_stages="[50, 5]", replay_concurrency="0", workspace=agent.workspace_id)
    form = form_class(data=data, instance=agent)

    assert not form.is_valid()
    assert {"rollout_stages", "replay_concurrency"} <= set(form.errors)


def test_a_form_encoded_body_is_a_415_not_a_500(api, agent):
    response = api.patch(
        f"/api/v1/agents/{agent.slug}", {"protected_sections": "null"}, format="multipart"
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("value", ["abc", "0", "501", "-1"])
def test_a_page_size_out_of_range_is_a_400(api, agent, value):
    response = api.get("/api/v1/runs", {"page_size": value})

    assert response.status_code == 400
    assert fields_of(response) == ["page_size"]


def test_an_unknown_rollout_status_filter_is_a_400(api, agent):
    response = api.get("/api/v1/rollouts", {"status": "sideways"})

    assert response.status_code == 400
    assert fields_of(response) == ["status"]


def test_an_empty_time_filter_is_a_400(api, agent):
    assert api.get("/api/v1/runs", {"until": ""}).status_code == 400


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_an_unknown_api_path_answers_a_json_404(api, method):
    response = getattr(api, method)("/api/v1/agents/bad%0Aslug/dreams")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_a_report_error_is_json_with_the_json_content_type(api, agent):
    response = api.get("/api/v1/dreams/999999/report.md")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--file", str(target), stderr=StringIO())
    return yaml.safe_load(target.read_text())


def test_every_operation_documents_the_errors_it_can_answer(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "401", "403", "404", "429"} <= documented, (method, path)
            if method in ("post", "put", "patch", "delete"):
                assert {"409", "415"} <= documented, (method, path)


def test_the_schema_states_the_page_size_bounds_and_nullable_version_fields(schema):
    runs = schema["paths"]["/api/v1/runs"]["get"]["parameters"]
    page_size = next(p for p in runs if p["name"] == "page_size")
    assert page_size["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    version = schema["components"]["schemas"]["ConfigVersion"]["properties"]
    assert "null" in str(version["parent"]) and "null" in str(version["author"])


@pytest.mark.parametrize("value", ["null", "maybe", "2"])
def test_a_boolean_filter_that_is_not_a_boolean_is_a_400(api, agent, value):
    response = api.get("/api/v1/proposals", {"stale": value})

    assert response.status_code == 400
    assert fields_of(response) == ["stale"]
    assert fields_of(api.get("/api/v1/runs", {"negative_feedback": value})) == ["negative_feedback"]


def test_a_boolean_filter_given_twice_is_a_400(api, agent):
    response = api.get("/api/v1/proposals?stale=true&stale=false")

    assert response.status_code == 400
    assert fields_of(response) == ["stale"]
    assert api.get("/api/v1/proposals", {"stale": "true"}).status_code == 200


def test_the_report_is_markdown_whatever_the_format_parameter_says(api, agent, schema):
    from tests.factories import DreamCycleFactory

    cycle = DreamCycleFactory(agent=agent)
    operation = schema["paths"]["/api/v1/dreams/{id}/report.md"]["get"]
    assert "format" not in {p["name"] for p in operation["parameters"]}
    for query in ("", "?format=", "?format=json"):
        response = api.get(f"/api/v1/dreams/{cycle.pk}/report.md{query}")
        assert response.status_code == 200, (query, response.content)
        assert response["Content-Type"].startswith("text/markdown")


def test_an_apply_conflict_is_documented_as_either_the_application_or_the_error(schema):
    operation = schema["paths"]["/api/v1/managed/proposals/{id}/apply"]["post"]
    conflict = operation["responses"]["409"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][conflict["$ref"].rsplit("/", 1)[1]]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in component["oneOf"]}
    assert refs == {"MemoryApplication", "Error"}
    assert "503" in operation["responses"]
