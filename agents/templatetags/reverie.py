"""The one template-tag library (`{% load reverie %}`): numbers, intervals, p-values, JSON, slots.

Filters return plain strings, which templates autoescape."""

import json
from typing import Any

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString

from agents.slots import render_slot

register = template.Library()


@register.filter
def pct(value: Any, digits: int = 0) -> str:
    try:
        return f"{float(value) * 100:.{int(digits)}f}%"
    except (TypeError, ValueError):
        return "–"


@register.filter
def ci(value: Any) -> str:
    """[lo, hi] → '42–71%'; no interval (None, n = 0) → '—'."""
    if value is None:
        return "—"
    try:
        lo, hi = value
        return f"{float(lo) * 100:.0f}–{float(hi) * 100:.0f}%"
    except (TypeError, ValueError):
        return ""


@register.filter
def pvalue(value: Any) -> str:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


@register.filter
def signed(value: Any, digits: int = 0) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    text = f"{number:+,.{int(digits)}f}"
    return "±0" if float(text.replace(",", "")) == 0 else text.replace("-", "−")


@register.filter
def usd(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    sign = "+" if number > 0 else ("−" if number < 0 else "")
    return f"{sign}${abs(number):,.{int(digits)}f}"


@register.filter
def money(value: Any) -> str:
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return "–"


@register.filter
def as_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def result_text(content: Any) -> str:
    """A tool_result's content (string or list of blocks) as plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(json.dumps(block, ensure_ascii=False, default=str))
        return "\n".join(parts)
    return json.dumps(content, indent=2, ensure_ascii=False, default=str)


@register.filter
def get(mapping: Any, key: Any) -> Any:
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def age(value: Any) -> str:
    """Compact age: 5m, 3h, 2d."""
    if not value:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    if seconds < 3600:
        return f"{max(1, int(seconds // 60))}m"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


@register.filter
def content_blocks(content: Any) -> list[dict[str, Any]]:
    """Message content as a list of blocks (plain strings become one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content]
    return []


FLAG_LABELS = {
    "protected_section": "protected section",
    "possible_injection": "possible injection",
    "policy_value": "changes a policy value",
    "relaxes_check": "relaxes a check",
    "growth": "growth",
    "off_recording": "off-recording",
    "unverifiable": "unverifiable",
}


@register.filter
def flag_label(code: Any) -> str:
    return FLAG_LABELS.get(str(code), str(code).replace("_", " "))


@register.filter
def role_label(message: Any) -> str:
    """'tool result' for a user turn made only of tool results (that is what it is)."""
    if not isinstance(message, dict):
        return "?"
    role = str(message.get("role") or "?")
    content = message.get("content")
    if (
        role == "user"
        and isinstance(content, list)
        and content
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    ):
        return "tool result"
    return role


@register.simple_tag(takes_context=True)
def slot(context: template.Context, name: str, **values: Any) -> SafeString:
    """What the apps above this page put in the named slot (see agents/slots.py)."""
    return render_slot(name, context.get("request"), values)
