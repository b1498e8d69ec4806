import pytest

pytestmark = pytest.mark.django_db


def test_posting_one_run_stores_it_once(api, agent):
    payload = {
        "agent": "support",
        "external_id": "r1",
        "status": "failure",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    }
    first = api.post("/api/v1/runs", payload, format="json")
    second = api.post("/api/v1/runs", payload, format="json")
    assert first.status_code == 201, first.content
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["created"] is False
