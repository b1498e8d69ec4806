"""Timestamps entering the API are bounded: a value the database or Python cannot read back is a 400."""

import json
from typing import Any

import pytest

from agents.models import Run

pytestmark = pytest.mark.django_db

YEAR_10000_IN_UTC = "9999-12-31T23:00:00-12:00"


def run_payload(external_id: str = "r1", **extra: Any) -> dict[str, Any]:
    payload = {
        "agent": "support",
        "external_id": external_id,
        "status": "failure",
        "messages": [
            {"role": "user", "content": "Where is order 42?"},
            {"role": "assistant", "content": "It has shipped."},
        ],
    }
    payload.update(extra)
    return payload


def post(api: Any, body: Any) -> Any:
    return api.post("/api/v1/runs", json.dumps(body), content_type="application/json")


@pytest.mark.parametrize(
    "started_at",
    [
        YEAR_10000_IN_UTC,
        "0001-01-01T00:00:00+01:00",
        "1900-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
        "2026-11-01T10:00:00+16:00",
        "2026-11-01T10:00:00-23:59",
    ],
)
def test_a_started_at_out_of_range_is_a_400_naming_the_field(api, agent, started_at):
    response = post(api, run_payload(started_at=started_at))

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["started_at"]
    assert Run.objects.count() == 0


def test_after_a_refused_timestamp_the_runs_api_and_page_still_work(api, client, owner, agent):
    post(api, run_payload("bad", started_at=YEAR_10000_IN_UTC))
    assert post(api, run_payload("good", started_at="2026-11-01T10:00:00+15:59")).status_code == 201

    assert api.get("/api/v1/runs").status_code == 200
    client.force_login(owner)
    assert client.get("/runs/").status_code == 200


def test_an_offset_is_stored_in_utc(api, agent):
    response = post(api, run_payload(started_at="2026-11-01T10:00:00+15:00"))

    stored = Run.objects.get(pk=response.json()["id"]).started_at
    assert stored.isoformat() == "2026-10-31T19:00:00+00:00"


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    "value", [YEAR_10000_IN_UTC, "2026-11-01T10:00:00+16:00", "2026-11-01T10:00:00-16:30"]
)
def test_a_filter_time_out_of_range_is_a_400_naming_the_parameter(api, agent, name, value):
    response = api.get("/api/v1/runs", {name: value})

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == [name]
