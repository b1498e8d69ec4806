"""The simulated model's answers to the dreamer's structured requests (merge, diagnose, draft).

Small and honest: every answer is derived from the request it receives — the fenced run
summaries (tool calls, outcome reasons, reviewers' comments) and the agent's documents — never
from labels hidden elsewhere. Rules it knows: a refund issued with no lookup before it, a refund
issued with no policy check while graders talk about a window, an escalation that graders call
needless; an outage is not something an instruction can fix. Anything else gets no edit.
"""

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from dreams.prompts import unfence
from dreams.simulated.registry import register

WORD = re.compile(r"[a-z]+")
PROTECTED = re.compile(
    r"<!--\s*protected\s*-->(?:(?!<!--\s*protected\s*-->).)*?<!--\s*/protected\s*-->",
    re.S | re.I,
)
DOCUMENT = re.compile(r'<document name="([^"]+)">\n(.*?)\n</document>', re.S)
STOP = {
    "the", "and", "for", "with", "any", "you", "your", "are", "not", "was", "this", "that", "from",
    "just", "because", "before", "after", "always", "issuing", "order", "orders", "yourself",
}  # fmt: skip


# -- request parsing -----------------------------------------------------------------------


def request_text(request: dict[str, Any]) -> str:
    parts = []
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [b.get("text", "") for b in content if isinstance(b, dict)]
    return "\n".join(parts)


def fenced_data(request: dict[str, Any]) -> dict[str, Any]:
    """All fenced JSON objects of the request merged into one dict."""
    data: dict[str, Any] = {}
    for body in unfence(request_text(request)):
        try:
            value = json.loads(body)
        except ValueError:
            continue
        if isinstance(value, dict):
            data.update(value)
    return data


def _words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower().replace("_", " ")) if len(w) > 2}


def _calls(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**call, "step": step.get("step", 0)}
        for step in summary.get("steps", [])
        for call in step.get("calls", [])
    ]


def _evidence_text(summary: dict[str, Any]) -> str:
    return " ".join([summary.get("outcome_reason", ""), *summary.get("feedback", [])]).lower()


# -- merge ---------------------------------------------------------------------------------


def _reason_words(group: dict[str, Any]) -> set[str]:
    signature = str(group.get("signature", ""))
    reason = signature.split("|", 2)[-1]
    return _words(reason + " " + " ".join(group.get("reasons", [])))


def _general_title(text: str) -> str:
    text = re.sub(r"(?<!\s)\s*\([^()]*\d[^()]*\)", "", text).strip()
    return (text[:1].upper() + text[1:])[:120] if text else "Recurring failure"


def handle_merge_patterns(request: dict[str, Any]) -> dict[str, Any]:
    groups = [g for g in fenced_data(request).get("groups", []) if isinstance(g, dict)]
    parent = {g["id"]: g["id"] for g in groups}

    def root(gid: str) -> str:
        while parent[gid] != gid:
            gid = parent[gid]
        return gid

    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            sig_a, sig_b = str(a["signature"]).split("|"), str(b["signature"]).split("|")
            if sig_a[:2] != sig_b[:2]:
                continue  # another status or another failing tool: another mistake
            wa, wb = _reason_words(a), _reason_words(b)
            if wa and wb and len(wa & wb) / len(wa | wb) >= 0.5:
                parent[root(b["id"])] = root(a["id"])
    merged: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        merged.setdefault(root(group["id"]), []).append(group)
    out = []
    for members in merged.values():
        lead = max(members, key=lambda g: g.get("runs", 0))
        reasons = Counter(r for g in members for r in g.get("reasons", []))
        title = _general_title(reasons.most_common(1)[0][0] if reasons else lead["signature"])
        tool = str(lead["signature"]).split("|")[1]
        sequences = Counter(
            " → ".join(c["tool"] for c in _calls(s)) or "no tool call"
            for g in members
            for s in g.get("samples", [])
        )
        seq = sequences.most_common(1)[0][0] if sequences else "no tool call"
        out.append(
            {
                "members": [g["id"] for g in members],
                "title": title,
                "description": f"Runs fail at {tool}; the usual tool sequence is {seq}.",
                "reason": (
                    f"{len(members)} signature groups with the same status and failing tool "
                    f"({tool}) and largely the same grader reason."
                    if len(members) > 1
                    else f"One signature group: failing tool {tool}."
                ),
            }
        )
    return {"groups": out}


# -- diagnose ------------------------------------------------------------------------------


def _diagnose(summary: dict[str, Any]) -> dict[str, Any]:
    steps = summary.get("steps", [])
    calls = _calls(summary)
    evidence = _evidence_text(summary)
    errored = [c for c in calls if c.get("error")]
    if errored:
        call = errored[0]
        return {
            "run_id": summary["run_id"],
            "step": call["step"],
            "explanation": f"{call['tool']} failed ({str(call.get('result', ''))[:60]}); "
            "the agent could not continue.",
        }
    if not calls:
        return {
            "run_id": summary["run_id"],
            "step": max(len(steps) - 1, 0),
            "explanation": "The agent answered without calling any tool.",
        }
    evidence_words = _words(evidence)

    def score(call: dict[str, Any]) -> int:
        return sum(
            1
            for part in _words(call["tool"])
            if any(w.startswith(part[:5]) for w in evidence_words)
        )

    best = max(calls, key=lambda c: (score(c), c["step"]))
    before = [c["tool"] for c in calls if c["step"] < best["step"]]
    named = sorted(
        {w for w in re.findall(r"(?<![a-z])[a-z]+_[a-z_]+", evidence)} - {c["tool"] for c in calls}
    )
    explanation = f"Called {best['tool']} at step {best['step']}"
    explanation += f" after {', '.join(before)}" if before else " as its first action"
    if named:
        explanation += f" without calling {', '.join(named)}"
    reason = summary.get("outcome_reason", "")
    if reason:
        explanation += f"; outcome: {reason[:100]}"
    return {"run_id": summary["run_id"], "step": best["step"], "explanation": explanation + "."}


def handle_diagnose_runs(request: dict[str, Any]) -> dict[str, Any]:
    runs = [
        r for r in fenced_data(request).get("runs", []) if isinstance(r, dict) and "run_id" in r
    ]
    return {"runs": [_diagnose(r) for r in runs]}


# -- draft ---------------------------------------------------------------------------------


def _tool_like(tools: list[str], *needles: str) -> str | None:
    for needle in needles:
        for tool in tools:
            if needle in tool:
                return tool
    return None


def _first_number(pattern: str, texts: list[str], default: str) -> str:
    for text in texts:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return default


def _rules(
    runs: list[dict[str, Any]], tools: list[str], documents: dict[str, str]
) -> list[dict[str, Any]]:
    """Instruction rules the runs support, each with the runs that show the mistake."""
    refund = next(
        (t for t in tools if "refund" in t and not re.search(r"policy|check|eligib", t)), None
    )
    lookup = _tool_like(tools, "lookup", "get_order", "find", "fetch")
    policy = _tool_like(tools, "policy", "eligib")
    escalate = _tool_like(tools, "escalat", "human", "handoff")
    texts = [_evidence_text(r) for r in runs] + list(documents.values())
    days = _first_number(r"(\d+)[- ]day", texts, "30")
    amount = _first_number(r"over \$(\d+)", texts, "500")
    found: dict[str, dict[str, Any]] = {}

    def support(key: str, run: dict[str, Any], rule: dict[str, Any]) -> None:
        found.setdefault(key, {**rule, "runs": []})["runs"].append(run["run_id"])

    for run in runs:
        names = [c["tool"] for c in _calls(run)]
        evidence = _evidence_text(run)
        if run.get("status") == "error" or any(c.get("error") for c in _calls(run)):
            support("outage", run, {"outage": True})
            continue
        if refund and refund in names:
            first_refund = names.index(refund)
            verified = lookup is not None and lookup in names[:first_refund]
            if lookup and not verified and re.search(r"verif|look ?up|lookup", evidence):
                support(
                    "verify",
                    run,
                    {
                        "title": "Verify the order before any refund",
                        "anchor": re.escape(lookup),
                        "instruction": f"Always verify the order with {lookup} before issuing any "
                        "refund, even when the customer asks you to skip the check.",
                    },
                )
            elif policy and policy not in names and re.search(r"window|days|policy", evidence):
                support(
                    "window",
                    run,
                    {
                        "title": "Check the refund window before refunding",
                        "anchor": rf"\b{days}[- ]days?\b",
                        "instruction": f"Before any refund, call {policy} and decline orders "
                        f"outside the {days}-day window.",
                    },
                )
        if (
            escalate
            and escalate in names
            and re.search(r"escalat", evidence)
            and re.search(r"standard|upset|annoyed|could have resolved|for nothing", evidence)
        ):
            support(
                "escalate",
                run,
                {
                    "title": "Resolve standard refunds without escalating",
                    "anchor": r"annoyed|upset|angry|frustrat",
                    "instruction": f"Resolve standard refunds under ${amount} yourself; do not "
                    "escalate just because a customer is upset.",
                },
            )
    return sorted(found.values(), key=lambda r: -len(r["runs"]))


def _sections(text: str) -> list[tuple[int, int]]:
    """(first line, end line) of each Markdown section outside protected blocks."""
    lines = text.splitlines()
    protected_lines: set[int] = set()
    for match in PROTECTED.finditer(text):
        first = text[: match.start()].count("\n")
        protected_lines.update(range(first, first + match.group(0).count("\n") + 1))
    starts = [
        i for i, line in enumerate(lines) if line.startswith("#") and i not in protected_lines
    ]
    starts = starts or [0]
    sections = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        end = min([end, *[p for p in protected_lines if p > start]])
        sections.append((start, end))
    return sections


def _section_end(text: str, line_no: int) -> int:
    """The line after the last non-empty line of the section holding `line_no`."""
    lines = text.splitlines()
    for start, end in _sections(text):
        if start <= line_no < end:
            body = lines[start:end]
            return start + max((i for i, line in enumerate(body) if line.strip()), default=0) + 1
    return len(lines)


def _place(documents: dict[str, str], instruction: str, anchor: str | None) -> tuple[str, int]:
    """Where the instruction goes: the section of the text it was derived from, else the section
    sharing most words with it (never inside a protected block)."""
    if anchor:
        for name, text in documents.items():
            protected = [m.span() for m in PROTECTED.finditer(text)]
            for match in re.finditer(anchor, text, re.I):
                if not any(a <= match.start() < b for a, b in protected):
                    return name, _section_end(text, text[: match.start()].count("\n"))
    wanted = _words(instruction) - STOP
    best: tuple[int, str, int] = (-1, "system_prompt", 0)
    for name, text in documents.items():
        lines = text.splitlines()
        for start, end in _sections(text):
            score = len(wanted & _words(" ".join(lines[start:end])))
            if score > best[0]:
                best = (score, name, _section_end(text, start))
    return best[1], best[2]


def handle_draft_edit(request: dict[str, Any]) -> dict[str, Any]:
    data = fenced_data(request)
    runs = [r for r in data.get("runs", []) if isinstance(r, dict) and "run_id" in r]
    text = request_text(request)
    documents = {name: body for name, body in DOCUMENT.findall(text.split("<<<RUN_DATA", 1)[0])}
    tools_line = re.search(r"The agent's tools: (.*)", text)
    tools = [t.strip() for t in tools_line.group(1).split(",")] if tools_line else []
    rules = _rules(runs, tools, documents)
    outage = next((r for r in rules if r.get("outage")), None)
    usable = [r for r in rules if not r.get("outage") and len(r["runs"]) >= 2]
    if not usable:
        why = (
            "These runs failed because a tool errored or timed out; an instruction change "
            "cannot fix an outage."
            if outage
            else "The runs show no mistake that a general instruction would prevent."
        )
        return {"title": "No edit", "rationale": why, "evidence_run_ids": [], "edits": []}
    new_documents = dict(documents)
    insertions: dict[str, list[tuple[int, str]]] = {}
    for rule in usable:
        name, at = _place(documents, rule["instruction"], rule.get("anchor"))
        insertions.setdefault(name, []).append((at, f"- {rule['instruction']}"))
    edits = []
    for name, items in insertions.items():
        lines = documents[name].splitlines()
        for at, line in sorted(items, reverse=True):
            lines.insert(at, line)
        new_documents[name] = "\n".join(lines) + ("\n" if documents[name].endswith("\n") else "")
        diff = "".join(
            difflib.unified_diff(
                documents[name].splitlines(keepends=True),
                new_documents[name].splitlines(keepends=True),
                fromfile=f"a/{name}",
                tofile=f"b/{name}",
            )
        )
        edits.append({"document": name, "action": "change", "diff": diff})
    evidence = sorted({pk for rule in usable for pk in rule["runs"]})
    return {
        "title": "; ".join(r["title"] for r in usable),
        "rationale": " ".join(
            f"In {len(r['runs'])} of the {len(runs)} runs read, the agent made this mistake; "
            f"new rule: {r['instruction']}"
            for r in usable
        ),
        "evidence_run_ids": evidence,
        "edits": edits,
    }


HANDLERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "merge_patterns": handle_merge_patterns,
    "diagnose_runs": handle_diagnose_runs,
    "draft_edit": handle_draft_edit,
}


# The simulated backend's registry (dreams/simulated/registry.py) imports this module lazily.
for _tool_name, _handler in HANDLERS.items():
    register(_tool_name)(_handler)
