"""The agent settings form of the admin: widgets for the list and map settings that were raw
JSON (write tools, sandbox tools, protected sections, rollout stages), validated against the
agent's own tools, with help texts that say what each setting does."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString

from agents.models import Agent


def tool_names(agent: Agent | None) -> list[str]:
    """The names of the tools in the agent's stable version (what its runs can call)."""
    version = agent.stable_version if agent is not None and agent.pk else None
    names = []
    for tool in (version.tools if version else None) or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str) and name:
                names.append(name)
    return sorted(set(names))


class _TextBackedField(forms.CharField):
    """A text widget for a JSON value: shown as text, cleaned to the value; a JSON literal is
    still accepted, so older scripts that post JSON keep working."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        return self.to_text(value)

    def to_text(self, value: Any) -> str:
        raise NotImplementedError

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != (initial if initial is not None else self.empty())
        except ValidationError:
            return True

    def empty(self) -> Any:
        return []


class LinesField(_TextBackedField):
    """One item per line ↔ a list of strings."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def to_text(self, value: Any) -> str:
        return "\n".join(str(v) for v in value or [])

    def to_python(self, value: Any) -> Any:  # list[str] (Any like django-stubs' JSONField)
        text = (value or "").strip()
        if text.startswith("["):
            import json

            try:
                parsed = json.loads(text)
            except ValueError:
                raise ValidationError("not valid JSON; give one item per line") from None
            if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
                raise ValidationError("give one item per line")
            return parsed
        return [line.strip() for line in text.splitlines() if line.strip()]


class StagesField(_TextBackedField):
    """Rising canary percents ending at 100, written `5, 25, 100`."""

    def to_text(self, value: Any) -> str:
        return ", ".join(str(v) for v in value or [])

    def to_python(self, value: Any) -> Any:  # list[int]
        text = (value or "").strip().strip("[]")
        if not text:
            return []
        parts = [p.strip().rstrip("%") for p in text.replace(";", ",").split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ValidationError("give whole percents separated by commas, e.g. 5, 25, 100")
        stages = [int(p) for p in parts]
        if not all(1 <= p <= 100 for p in stages):
            raise ValidationError("each stage is a percent from 1 to 100")
        if stages != sorted(set(stages)):
            raise ValidationError("stages must rise strictly, e.g. 5, 25, 100")
        if stages[-1] != 100:
            raise ValidationError("the last stage must be 100 (everyone on the new version)")
        return stages


class SandboxToolsField(_TextBackedField):
    """`tool_name = dotted.path.to.callable`, one a line ↔ {tool name: dotted path}; every
    path must import and be callable."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def empty(self) -> Any:
        return {}

    def to_text(self, value: Any) -> str:
        return "\n".join(f"{k} = {v}" for k, v in sorted((value or {}).items()))

    def to_python(self, value: Any) -> Any:  # dict[str, str]
        text = (value or "").strip()
        if text.startswith("{"):
            import json

            try:
                parsed = json.loads(text)
            except ValueError:
                raise ValidationError("not valid JSON; give `tool = dotted.path` lines") from None
            if not isinstance(parsed, dict):
                raise ValidationError("give `tool = dotted.path` lines")
            lines = [f"{k} = {v}" for k, v in parsed.items()]
        else:
            lines = [line for line in text.splitlines() if line.strip()]
        result: dict[str, str] = {}
        errors = []
        for line in lines:
            name, sep, path = (part.strip() for part in line.partition("="))
            if not sep or not name or not path:
                errors.append(f"“{line.strip()}”: write `tool_name = dotted.path.to.callable`")
                continue
            try:
                target = import_string(path)
            except ImportError as exc:
                errors.append(f"{name}: cannot import {path} ({exc})")
                continue
            if not callable(target):
                errors.append(f"{name}: {path} is not callable")
                continue
            result[name] = path
        if errors:
            raise ValidationError(errors)
        return result


class EnvironmentUrlWidget(forms.URLInput):
    """The environment URL with a "Test connection" button: it posts the URL as typed (saved or
    not) to the admin's probe, which answers with the tools served or the reason it failed."""

    class Media:
        js = ["agents/environment_check.js"]

    def __init__(self, *, agent_id: int | None = None, attrs: dict[str, Any] | None = None):
        super().__init__(
            attrs={"size": 60, "style": "max-width:100%;box-sizing:border-box", **(attrs or {})}
        )
        self.agent_id = agent_id

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        field = super().render(name, value, attrs, renderer)
        return format_html(
            '<div class="environment-field" style="flex:1 1 auto;min-width:0">'
            '<span class="environment-url" style="display:flex;gap:8px;align-items:center;'
            'flex-wrap:wrap">{}<button type="button" class="button" data-environment-check="{}" '
            'data-agent="{}">Test connection</button></span>'
            '<div class="environment-check-result" aria-live="polite"></div></div>',
            field,
            reverse("admin:agents_agent_environment_check"),
            self.agent_id or "",
        )


ENVIRONMENT_HELP = (
    "An MCP server (streamable HTTP) on staging that executes every tool call of a replay "
    "against a sandbox copy of your systems, one session a replay; empty: tools answer from the "
    "recording. If it offers reverie_reset, each replay starts from the run's recorded snapshot; "
    "if it offers reverie_check, that tool grades the replay on the sandbox's final state. "
    "Private or loopback hosts need REVERIE_ENVIRONMENT_ALLOWED_HOSTS. “Test connection” opens a "
    "session and lists the tools, without saving."
)


class AgentAdminForm(forms.ModelForm):
    protected_sections = LinesField(
        required=False,
        help_text="One heading (e.g. “## Legal”) or literal text per line. A proposal that "
        "changes one is flagged and only a workspace admin can approve it.",
    )
    write_tools = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Tools with side effects (refunds, emails, writes). In replay, a call to one "
        "with arguments that differ from the recording stops the replay as unverifiable: it is "
        "never executed. Choices are the tools of the stable version.",
    )
    sandbox_tools = SandboxToolsField(
        required=False,
        help_text="One “tool_name = dotted.path.to.callable” per line: a read-only Python function "
        "that answers this tool in replays when the arguments differ from the recording (else "
        "the replay gets “not available in replay” and counts as off-recording). Each path "
        "must import.",
    )
    rollout_stages = StagesField(
        required=False,
        help_text="Canary percents, rising, ending at 100, e.g. 5, 25, 100. Each stage waits "
        "for an approval before the next; a significant regression halts it. Empty: 5, 25, 100.",
    )

    class Meta:
        model = Agent
        # The admin narrows this to its fieldsets; these are every setting a person edits.
        fields = [
            "workspace",
            "slug",
            "name",
            "description",
            "model",
            "dreaming_enabled",
            "dream_frequency",
            "dream_window_start",
            "dream_window_end",
            "failure_threshold",
            "cycle_token_budget",
            "monthly_token_budget",
            "replay_concurrency",
            "required_approvals",
            "protected_sections",
            "sandbox_tools",
            "write_tools",
            "webhook_url",
            "webhook_secret",
            "is_paused",
            "rollout_stages",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.known_tools = tool_names(self.instance)
        current = list(self.instance.write_tools or []) if self.instance.pk else []
        choices = sorted({*self.known_tools, *current})
        field = self.fields["write_tools"]
        if choices:
            field.choices = [(name, name) for name in choices]  # type: ignore[attr-defined]
        else:
            # No tools known yet (a new agent, or no stable version): names one per line.
            self.fields["write_tools"] = LinesField(required=False, help_text=field.help_text)
        if "environment_url" in self.fields:
            url_field = self.fields["environment_url"]
            url_field.widget = EnvironmentUrlWidget(agent_id=self.instance.pk)
            url_field.help_text = ENVIRONMENT_HELP

    def clean_sandbox_tools(self) -> dict[str, str]:
        value: dict[str, str] = self.cleaned_data.get("sandbox_tools") or {}
        unknown = sorted(set(value) - set(self.known_tools)) if self.known_tools else []
        if unknown:
            raise ValidationError(
                f"not a tool of the stable version: {', '.join(unknown)} "
                f"(its tools: {', '.join(self.known_tools)})"
            )
        return value

    def clean_write_tools(self) -> list[str]:
        return list(self.cleaned_data.get("write_tools") or [])
