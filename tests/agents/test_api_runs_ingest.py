"""POST /api/v1/runs: idempotency, all-or-nothing batches, validation errors, limits, auth, scope."""

import json
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from agents import services
from agents.models import Run
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/runs"


def run_payload(external_id: str = "r1", **extra: Any) -> dict[str, Any]:
    payload = {
        "agent": "support",
        "external_id": external_id,
        "status": "failure",
        "messages": [
            {"role": "user", "content": "Where is order 42?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "tu_1", "name": "lookup_order", "input": {"id": 42}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "shipped"}],
            },
            {"role": "assistant", "content": "It has shipped."},
        ],
        "usage": {"input_tokens": 1000, "output_tokens": 100},
    }
    payload.update(extra)
    return payload


def post_json(client: Any, body: Any) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, raw, content_type="application/json")


def error_of(response: Any) -> dict[str, Any]:
    return response.json()["error"]


# -- Idempotency ---------------------------------------------------------------------------


def test_one_run_is_stored_in_canonical_form_with_derived_fields(api, agent):
    response = post_json(api, run_payload(started_at="2026-11-01T10:00:00Z", latency_ms=1234))

    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.agent == agent
    assert run.config_version == agent.stable_version  # defaults to the stable version
    assert run.messages[0]["content"] == [{"type": "text", "text": "Where is order 42?"}]
    assert run.step_count == 2
    assert run.source_format == "anthropic"
    assert run.started_at.isoformat() == "2026-11-01T10:00:00+00:00"
    # 1000 input tokens at $3/M and 100 output at $15/M for the agent's default model.
    assert str(run.cost_usd) == "0.004500"


def test_reposting_a_run_creates_nothing_and_returns_the_same_id(api, agent):
    first = post_json(api, run_payload())
    second = post_json(api, run_payload(status="success"))

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == {**first.json(), "created": False}
    assert Run.objects.count() == 1
    assert Run.objects.get().status == "failure"  # the stored run is not rewritten


def test_reposting_a_batch_creates_nothing_the_second_time(api, agent):
    batch = {"runs": [run_payload(f"r{i}") for i in range(5)]}
    first = post_json(api, batch)
    second = post_json(api, batch)

    assert first.status_code == 201
    assert first.json()["created"] == 5
    assert second.status_code == 200
    assert second.json()["created"] == 0
    assert second.json()["existing"] == 5
    assert [r["id"] for r in second.json()["results"]] == [r["id"] for r in first.json()["results"]]
    assert Run.objects.count() == 5


def test_a_batch_mixing_new_and_stored_runs_only_creates_the_new_ones(api, agent):
    post_json(api, [run_payload("old")])
    response = post_json(api, [run_payload("old"), run_payload("new")])

    body = response.json()
    assert response.status_code == 201
    assert (body["created"], body["existing"]) == (1, 1)
    assert [r["created"] for r in body["results"]] == [False, True]
    assert sorted(Run.objects.values_list("external_id", flat=True)) == ["new", "old"]


def test_duplicates_inside_one_batch_store_one_run_and_report_the_same_id(api, agent):
    response = post_json(api, [run_payload("dup"), run_payload("other"), run_payload("dup")])

    results = response.json()["results"]
    assert response.status_code == 201
    assert response.json()["created"] == 2
    assert results[0]["id"] == results[2]["id"]
    assert [r["created"] for r in results] == [True, True, False]
    assert Run.objects.filter(external_id="dup").count() == 1


def test_the_same_external_id_on_two_agents_is_two_runs(api, agent, workspace):
    services.create_agent(workspace=workspace, slug="billing", name="Billing")
    response = post_json(api, [run_payload("same"), run_payload("same", agent="billing")])

    assert response.json()["created"] == 2
    assert Run.objects.filter(external_id="same").count() == 2


# -- Batch errors: all-or-nothing ----------------------------------------------------------


def test_a_bad_item_names_its_index_and_field_and_nothing_of_the_batch_is_written(api, agent):
    batch = [run_payload("good-1"), run_payload("bad", status="exploded"), run_payload("good-2")]
    response = post_json(api, {"runs": batch})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["runs[1].status"]
    assert "success, failure, error, unknown" in error["fields"]["runs[1].status"][0]
    assert Run.objects.count() == 0


def test_every_bad_item_is_reported_with_its_path(api, agent):
    bad_block = run_payload("b")
    bad_block["messages"][1]["content"][1]["input"] = "not an object"
    batch = [run_payload("a", score="high"), bad_block, run_payload("c", tags="x")]
    response = post_json(api, batch)

    fields = error_of(response)["fields"]
    assert set(fields) == {
        "runs[0].score",
        "runs[1].messages[1].content[1].input",
        "runs[2].tags",
    }
    assert Run.objects.count() == 0


def test_a_tool_result_without_its_call_is_rejected(api, agent):
    payload = run_payload()
    payload["messages"][2]["content"][0]["tool_use_id"] = "tu_missing"
    response = post_json(api, payload)

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["messages[2].content[0].tool_use_id"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"external_id": ""}, "external_id"),
        ({"external_id": 12}, "external_id"),
        ({"status": 3}, "status"),
        ({"status": ["success"]}, "status"),
        ({"score": True}, "score"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": 10**12}, "latency_ms"),
        ({"cost_usd": "lots"}, "cost_usd"),
        ({"cost_usd": 10**9}, "cost_usd"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"started_at": "2026-13-45T00:00:00Z"}, "started_at"),
        ({"metadata": []}, "metadata"),
        ({"config_version": 99}, "config_version"),
        ({"config_version": "1"}, "config_version"),
        ({"usage": {"input_tokens": -5}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": 2**70}}, "usage.input_tokens"),
        (
            {"expectations": {"expected_answer_pattern": "("}},
            "expectations.expected_answer_pattern",
        ),
        ({"expectations": {"colour": "red"}}, "expectations.colour"),
        ({"format": "xml"}, "format"),
    ],
)
def test_wrong_types_are_a_400_naming_the_field(api, agent, extra, field):
    response = post_json(api, run_payload(**extra))

    assert response.status_code == 400, response.content
    assert list(error_of(response)["fields"]) == [field]
    assert error_of(response)["message"].startswith(f"{field}: ")
    assert Run.objects.count() == 0


def test_a_nul_character_is_a_400_naming_where_it_is(api, agent):
    payload = run_payload()
    payload["messages"][3]["content"] = "It has\u0000 shipped."
    response = post_json(api, [run_payload("fine"), payload])

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["runs[1].messages[3].content"]
    assert Run.objects.count() == 0


def test_malformed_json_is_a_400_that_says_what_was_expected(api, agent):
    response = post_json(api, '{"agent": "support", "external_id": ')

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "parse_error"
    assert "Malformed JSON" in error["message"]
    assert '{"runs": [...]}' in error["message"]


def test_nan_is_not_json(api, agent):
    response = post_json(api, '{"agent": "support", "external_id": "x", "score": NaN}')

    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


@pytest.mark.parametrize("body", ["[]", '"a run"', "42", '{"runs": {}}'])
def test_a_body_of_the_wrong_shape_is_a_400(api, agent, body):
    response = post_json(api, body)

    assert response.status_code == 400
    assert error_of(response)["fields"] == {
        "runs": ["expected a run object or a non-empty list of runs"]
    }


def test_a_non_json_content_type_is_a_415(api, agent):
    response = api.post(URL, "agent=support", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415


def test_an_unknown_agent_is_a_400_naming_it(api, agent):
    response = post_json(api, run_payload(agent="nobody"))

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"agent": ["unknown agent 'nobody' in this workspace"]}


def test_an_unknown_transcript_shape_is_a_400_saying_what_was_expected(api, agent):
    response = post_json(api, {"agent": "support", "external_id": "x", "transcript": "hi"})

    assert response.status_code == 400
    message = error_of(response)["fields"]["messages"][0]
    assert "unknown transcript shape" in message
    assert "request` + `response`" in message
    assert "OpenAI" in message


def test_a_run_can_name_an_older_config_version(api, agent):
    ConfigVersionFactory(agent=agent, number=2)
    response = post_json(api, run_payload(config_version=2))

    assert Run.objects.get(pk=response.json()["id"]).config_version.number == 2


# -- Limits --------------------------------------------------------------------------------


@override_settings(REVERIE_RUN_MAX_BYTES=2000)
def test_a_run_over_the_per_run_limit_is_a_413_naming_it(api, agent):
    big = run_payload("big", metadata={"blob": "x" * 3000})
    response = post_json(api, [run_payload("small"), big])

    assert response.status_code == 413
    assert error_of(response)["fields"] == {"runs[1]": ["too large"]}
    assert Run.objects.count() == 0


@override_settings(REVERIE_REQUEST_MAX_BYTES=5000)
def test_a_request_over_the_request_limit_is_a_413(api, agent):
    response = post_json(api, [run_payload(f"r{i}") for i in range(20)])

    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"
    assert Run.objects.count() == 0


@override_settings(REVERIE_BATCH_MAX_RUNS=3)
def test_a_batch_over_the_run_count_limit_is_a_413(api, agent):
    response = post_json(api, [run_payload(f"r{i}") for i in range(4)])

    assert response.status_code == 413
    assert error_of(response)["fields"] == {"runs": ["4 runs sent"]}


# -- Authentication and scope --------------------------------------------------------------


def test_no_key_is_a_401_with_a_bearer_challenge(client, agent):
    response = client.post(URL, json.dumps(run_payload()), content_type="application/json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "not_authenticated"


def test_an_unknown_key_is_a_401(client, agent):
    response = client.get(URL, HTTP_AUTHORIZATION="Bearer rv_not-a-real-key")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_a_401(client, agent, workspace):
    key, raw = services.create_api_key(workspace=workspace, name="old", scope="admin")
    services.revoke_api_key(key=key)
    response = client.post(
        URL,
        json.dumps(run_payload()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Run.objects.count() == 0


def test_another_workspace_cannot_post_to_our_agent(outsider_api, agent):
    response = post_json(outsider_api, run_payload())

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"agent": ["unknown agent 'support' in this workspace"]}
    assert Run.objects.count() == 0


def test_a_member_can_post_runs_with_a_browser_session(client, owner, agent):
    client.force_login(owner)
    response = client.post(URL, json.dumps(run_payload()), content_type="application/json")

    assert response.status_code == 201
    assert Run.objects.filter(agent=agent, created_at__lte=timezone.now()).count() == 1


def test_the_bearer_scheme_is_case_insensitive(client, agent, api_key):
    response = client.get(URL, HTTP_AUTHORIZATION=f"bearer {api_key}")

    assert response.status_code == 200


def test_a_naive_started_at_is_taken_as_utc(api, agent):
    response = post_json(api, run_payload(started_at="2026-11-01T10:00:00"))

    stored = Run.objects.get(pk=response.json()["id"]).started_at
    assert stored.isoformat() == "2026-11-01T10:00:00+00:00"


def test_a_nul_character_in_the_agent_slug_is_a_400(api, agent):
    response = post_json(api, run_payload(agent="sup\u0000port"))

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["agent"]
