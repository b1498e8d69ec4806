"""The admin's agent form: write tools chosen from the agent's tools, sandbox tools checked
importable and named after a tool, protected sections one per line, rollout stages as rising
percents; each setting's help says what it does; changes go through the audited service."""

import pytest

from agents.forms import AgentAdminForm
from agents.models import AuditEvent
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db

TOOLS = [
    {"name": "lookup_order", "description": "", "input_schema": {"type": "object"}},
    {"name": "issue_refund", "description": "", "input_schema": {"type": "object"}},
    {"type": "function", "function": {"name": "send_email", "parameters": {}}},
]


@pytest.fixture
def tooled(agent):
    version = ConfigVersionFactory(agent=agent, number=2, tools=TOOLS)
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])
    return agent


def _data(agent, **changes):
    form = AgentAdminForm(instance=agent)
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name)
        if value is None or value == "":
            continue
        data[name] = field.prepare_value(value) if hasattr(field, "to_text") else value
    data.pop("write_tools", None)
    data["workspace"] = agent.workspace_id
    data.update(changes)
    for key in ("stable_version", "canary_version"):
        data.pop(key, None)
    return data


def test_widgets_turn_text_into_the_stored_lists_and_maps(tooled):
    form = AgentAdminForm(
        _data(
            tooled,
            write_tools=["issue_refund", "send_email"],
            protected_sections="## Legal\n\n  Never share card numbers.  \n",
            sandbox_tools="lookup_order = json.dumps",
            rollout_stages="5, 25%, 100",
        ),
        instance=tooled,
    )
    assert form.is_valid(), form.errors
    data = form.cleaned_data
    assert data["write_tools"] == ["issue_refund", "send_email"]
    assert data["protected_sections"] == ["## Legal", "Never share card numbers."]
    assert data["sandbox_tools"] == {"lookup_order": "json.dumps"}
    assert data["rollout_stages"] == [5, 25, 100]
    choices = [c for c, _ in form.fields["write_tools"].choices]
    assert choices == ["issue_refund", "lookup_order", "send_email"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rollout_stages", "25, 5, 100", "rise strictly"),
        ("rollout_stages", "5, 25", "last stage must be 100"),
        ("rollout_stages", "5, lots", "whole percents"),
        ("sandbox_tools", "lookup_order = no.such.module.fn", "cannot import"),
        ("sandbox_tools", "lookup_order = json", "cannot import"),
        ("sandbox_tools", "lookup_order json.dumps", "tool_name = dotted.path"),
        ("sandbox_tools", "refund_everything = json.dumps", "not a tool of the stable version"),
        ("write_tools", ["delete_account"], "Select a valid choice"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tooled, field, value, message):
    form = AgentAdminForm(_data(tooled, **{field: value}), instance=tooled)
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


def test_json_from_older_scripts_is_still_accepted(tooled):
    form = AgentAdminForm(
        _data(
            tooled,
            protected_sections='["## Legal"]',
            sandbox_tools='{"lookup_order": "json.dumps"}',
        ),
        instance=tooled,
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["protected_sections"] == ["## Legal"]


def test_help_texts_say_what_each_setting_does(tooled):
    form = AgentAdminForm(instance=tooled)
    assert "never executed" in form.fields["write_tools"].help_text
    assert "only a workspace admin can approve" in form.fields["protected_sections"].help_text
    assert "5, 25, 100" in form.fields["rollout_stages"].help_text


def test_an_agent_without_tools_names_write_tools_one_per_line(agent):
    form = AgentAdminForm(_data(agent, write_tools="issue_refund\nsend_email"), instance=agent)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["write_tools"] == ["issue_refund", "send_email"]


def test_the_admin_page_saves_the_widgets_through_the_audited_service(admin_client, tooled):
    url = f"/admin/agents/agent/{tooled.pk}/change/"
    page = admin_client.get(url)
    html = page.content.decode()
    assert 'type="checkbox" name="write_tools" value="issue_refund"' in html
    data = _data(
        tooled,
        write_tools=["issue_refund"],
        rollout_stages="10, 50, 100",
        # The admin's fieldsets also show the replay settings the form's own list leaves out.
        simulated_user="on",
        pure_tools="[]",
        **{
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
        },
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    tooled.refresh_from_db()
    assert tooled.write_tools == ["issue_refund"] and tooled.rollout_stages == [10, 50, 100]
    event = AuditEvent.objects.get(action="agent.settings")
    assert set(event.after) == {"write_tools", "rollout_stages"}
