"""Stage *draft*: per failure pattern, a structured edit → a validated change set → a proposal.

The dreamer reads only a pattern's drafting runs; its held-out runs judge the edit later. A
draft must cite at least two drafting runs, apply cleanly, stay within size limits and change
something. Drafts of different patterns that touch the same text are redrafted as one proposal.
Progress per pattern lives in `cycle.report["progress"]`, so a re-run skips finished patterns.
"""

import re
from typing import Any

from django.conf import settings
from django.db import transaction

from agents import services as agent_services
from agents.models import SYSTEM_PROMPT_DOCUMENT, ConfigVersion
from dreams import dreamer, patches, prompts
from dreams.llm import UnusableAnswer
from dreams.models import DreamCycle, FailurePattern, PatternRun, Proposal
from dreams.patterns import MIN_DRAFTING
from dreams.proposals import create_proposal

MAX_EDITS = 5
DOCUMENT_PATH = re.compile(r"^[\w][\w./ -]{0,199}$")


class DraftRejected(ValueError):
    """The model's draft is not an acceptable edit; the message says why."""


def version_changes(base: ConfigVersion, candidate: ConfigVersion) -> list[dict[str, str]]:
    """Per document: added / changed / removed, with a unified diff."""
    before, after = base.documents, candidate.documents
    changes = []
    for name in sorted(set(before) | set(after), key=lambda n: (n != SYSTEM_PROMPT_DOCUMENT, n)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        kind = "added" if old is None else "removed" if new is None else "changed"
        changes.append(
            {
                "document": name,
                "change": kind,
                "diff": patches.unified_diff(old or "", new or "", name=name),
            }
        )
    return changes


# -- validation ----------------------------------------------------------------------------


def _apply_edit(documents: dict[str, str], edit: Any) -> None:
    if not isinstance(edit, dict):
        raise DraftRejected("an edit is not an object")
    name = str(edit.get("document") or "").strip()
    action = edit.get("action")
    diff, new_text = edit.get("diff"), edit.get("new_text")
    if name != SYSTEM_PROMPT_DOCUMENT and (not DOCUMENT_PATH.match(name) or ".." in name):
        raise DraftRejected(f"invalid document name {name[:60]!r}")
    if action == "add":
        if name in documents:
            raise DraftRejected(f"cannot add {name}: it exists")
        text = new_text if isinstance(new_text, str) else None
        if text is None and isinstance(diff, str):
            text = _patched("", diff, name)
        if not text or not text.strip():
            raise DraftRejected(f"adding {name} needs its text")
        documents[name] = text
    elif action == "change":
        if name not in documents:
            raise DraftRejected(f"cannot change {name}: no such document")
        if isinstance(diff, str) and diff.strip():
            documents[name] = _patched(documents[name], diff, name)
        elif isinstance(new_text, str):
            documents[name] = new_text
        else:
            raise DraftRejected(f"changing {name} needs a diff or its new text")
    elif action == "remove":
        if name == SYSTEM_PROMPT_DOCUMENT or name not in documents:
            raise DraftRejected(f"cannot remove {name}")
        del documents[name]
    else:
        raise DraftRejected(f"unknown action {action!r}")


def _patched(text: str, diff: str, name: str) -> str:
    try:
        return patches.apply_patch(text, diff)
    except patches.PatchError as exc:
        raise DraftRejected(f"the diff for {name} does not apply: {exc}") from exc


def _added_chars(before: dict[str, str], after: dict[str, str]) -> int:
    """Characters on the lines the edit adds or rewrites, over all documents."""
    total = 0
    for name, text in after.items():
        new_lines = text.splitlines()
        matcher = patches.line_matcher(before.get(name, ""), text)
        total += sum(
            len(line)
            for tag, _, _, j1, j2 in matcher.get_opcodes()
            if tag in ("insert", "replace")
            for line in new_lines[j1:j2]
        )
    return total


def validate_draft(
    *, base: dict[str, str], answer: dict[str, Any], drafting_run_ids: set[int]
) -> dict[str, Any]:
    """Turn the model's answer into new documents, or raise DraftRejected with the reason."""
    edits = answer.get("edits")
    if not isinstance(edits, list) or not edits:
        reason = str(answer.get("rationale") or "").strip()[:300]
        raise DraftRejected("no edit proposed" + (f": {reason}" if reason else ""))
    if len(edits) > MAX_EDITS:
        raise DraftRejected(f"{len(edits)} edits; at most {MAX_EDITS} per proposal")
    evidence = answer.get("evidence_run_ids")
    cited = {
        pk
        for pk in (evidence if isinstance(evidence, list) else [])
        if isinstance(pk, int) and not isinstance(pk, bool)  # `true` is no run id
    } & drafting_run_ids
    if len(cited) < MIN_DRAFTING:
        raise DraftRejected(
            f"the insight is backed by {len(cited)} of the drafting runs; an edit needs "
            f"{MIN_DRAFTING}"
        )
    names = [str(e.get("document")) for e in edits if isinstance(e, dict)]
    if len(names) != len(set(names)):
        raise DraftRejected("two edits of the same document")
    documents = dict(base)
    for edit in edits:
        _apply_edit(documents, edit)
    if documents == base:
        raise DraftRejected("the edit changes nothing")
    limit = settings.REVERIE_DREAM_MAX_DOCUMENT_CHARS
    for name, text in documents.items():
        if len(text) > limit and len(text) > len(base.get(name, "")):
            raise DraftRejected(f"{name} would be {len(text):,} characters (limit {limit:,})")
    added = _added_chars(base, documents)
    if added > settings.REVERIE_DREAM_MAX_EDIT_CHARS:
        raise DraftRejected(
            f"the edit adds {added:,} characters (limit {settings.REVERIE_DREAM_MAX_EDIT_CHARS:,})"
        )
    title = str(answer.get("title") or "").strip()[:200]
    return {
        "documents": documents,
        "title": title or "Instruction change",
        "rationale": str(answer.get("rationale") or "").strip()[:4000],
        "evidence_run_ids": sorted(cited),
    }


# -- drafting ------------------------------------------------------------------------------


def _progress(cycle: DreamCycle) -> dict[str, Any]:
    return dict((cycle.report or {}).get("progress", {}).get("drafts", {}))


def _save_progress(*, cycle: DreamCycle, key: str, value: dict[str, Any]) -> None:
    with transaction.atomic():
        locked = DreamCycle.objects.select_for_update().get(pk=cycle.pk)
        report = dict(locked.report or {})
        progress = dict(report.get("progress", {}))
        drafts = dict(progress.get("drafts", {}))
        drafts[key] = value
        progress["drafts"] = drafts
        report["progress"] = progress
        locked.report = report
        locked.save(update_fields=["report"])
    cycle.report = report


def _memberships(patterns: list[FailurePattern], split: str) -> list[PatternRun]:
    return list(
        PatternRun.objects.filter(pattern__in=patterns, split=split)
        .select_related("run")
        .order_by("pattern_id", "run_id")
    )


def _ask_draft(
    *, cycle: DreamCycle, patterns: list[FailurePattern], base: ConfigVersion
) -> dict[str, Any]:
    """One draft call for `patterns`; returns a progress record (valid, rejected or skipped)."""
    drafting = _memberships(patterns, PatternRun.Split.DRAFTING)
    drafting_ids = {m.run_id for m in drafting}
    record: dict[str, Any] = {
        "patterns": [p.pk for p in patterns],
        "drafting_run_ids": sorted(drafting_ids),
    }
    if len(drafting_ids) < MIN_DRAFTING:
        return {**record, "status": "skipped", "reason": "seen in fewer than two drafting runs"}
    if not _memberships(patterns, PatternRun.Split.HELDOUT):
        return {**record, "status": "skipped", "reason": "no held-out runs to judge an edit"}
    summaries = []
    for membership in drafting:
        focus = {membership.divergence_step} if membership.divergence_step is not None else None
        summary = prompts.run_summary(
            membership.run, comments=membership.run.negative_comments(), focus_steps=focus
        )
        summary["pattern"] = membership.pattern_id
        if membership.divergence_step is not None:
            summary["divergence"] = {
                "step": membership.divergence_step,
                "explanation": membership.divergence_explanation,
            }
        summaries.append(summary)
    try:
        answer = _draft_answer(cycle=cycle, patterns=patterns, base=base, summaries=summaries)
    except UnusableAnswer as exc:
        return {**record, "status": "rejected", "reason": f"unusable answer: {exc}"}
    try:
        draft = validate_draft(base=base.documents, answer=answer, drafting_run_ids=drafting_ids)
    except DraftRejected as exc:
        return {**record, "status": "rejected", "reason": str(exc)}
    return {**record, "status": "valid", **draft}


def _draft_answer(
    *,
    cycle: DreamCycle,
    patterns: list[FailurePattern],
    base: ConfigVersion,
    summaries: list[dict[str, Any]],
) -> dict[str, Any]:
    return dreamer.ask(
        cycle=cycle,
        tool_name="draft_edit",
        input_schema=prompts.DRAFT_SCHEMA,
        system=prompts.DRAFT_SYSTEM,
        prompt=prompts.draft_prompt(
            pattern=[
                {"id": p.pk, "title": p.title, "description": p.description, "runs": p.count}
                for p in patterns
            ]
            if len(patterns) > 1
            else {
                "id": patterns[0].pk,
                "title": patterns[0].title,
                "description": patterns[0].description,
                "runs": patterns[0].count,
            },
            summaries=summaries,
            documents=base.documents,
            tools=[t.get("name", "") for t in base.tools or [] if isinstance(t, dict)],
        ),
    )


def overlapping_groups(
    *, base: dict[str, str], drafts: dict[str, dict[str, Any]]
) -> list[list[str]]:
    """Draft keys grouped so that drafts touching the same text of a document share a group."""
    ranges = {
        key: {
            name: patches.changed_ranges(base.get(name, ""), text)
            for name, text in draft["documents"].items()
            if base.get(name) != text
        }
        for key, draft in drafts.items()
    }
    removed = {
        key: {name for name in base if name not in draft["documents"]}
        for key, draft in drafts.items()
    }
    parent = {key: key for key in drafts}

    def root(key: str) -> str:
        while parent[key] != key:
            key = parent[key]
        return key

    keys = list(drafts)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            shared = set(ranges[a]) & set(ranges[b])
            clash = any(patches.ranges_touch(ranges[a][n], ranges[b][n]) for n in shared)
            clash = clash or bool((removed[a] | set(ranges[a])) & removed[b])
            clash = clash or bool(removed[a] & set(ranges[b]))
            if clash:
                parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(root(key), []).append(key)
    return list(groups.values())


def _create_proposal(
    *, cycle: DreamCycle, key: str, draft: dict[str, Any], base: ConfigVersion
) -> Proposal | None:
    patterns = list(FailurePattern.objects.filter(pk__in=draft["patterns"]).order_by("id"))
    heldout = sorted(m.run_id for m in _memberships(patterns, PatternRun.Split.HELDOUT))
    with transaction.atomic():
        DreamCycle.objects.select_for_update().get(pk=cycle.pk)
        if Proposal.objects.filter(cycle=cycle, metadata__draft_key=key).exists():
            return None
        documents = dict(draft["documents"])
        system_prompt = documents.pop(SYSTEM_PROMPT_DOCUMENT)
        candidate = agent_services.create_config_version(
            agent=cycle.agent,
            system_prompt=system_prompt,
            memory_documents=documents,
            tools=base.tools,
            model=base.model,
            parent=base,
            source=ConfigVersion.Source.DREAM,
            note=f"Dream cycle {cycle.pk}: {draft['title']}"[:300],
        )
        addressed = "\n".join(f"- {p.title} ({p.count} runs)" for p in patterns)
        return create_proposal(
            agent=cycle.agent,
            base_version=base,
            candidate_version=candidate,
            title=draft["title"],
            rationale=f"{draft['rationale']}\n\nAddresses:\n{addressed}".strip(),
            cycle=cycle,
            patterns=patterns,
            metadata={
                "draft_key": key,
                "drafting_run_ids": draft["drafting_run_ids"],
                "evidence_run_ids": draft["evidence_run_ids"],
                "heldout_run_ids": heldout,
                "guarded": False,
            },
        )


def draft_cycle(*, cycle: DreamCycle) -> int:
    """Stage *draft*: draft every pattern, merge drafts touching the same text, create proposals."""
    base = cycle.agent.stable_version
    if base is None:
        return 0
    patterns = list(cycle.patterns.order_by("-count", "id"))
    for pattern in patterns:
        key = str(pattern.pk)
        if key not in _progress(cycle):
            _save_progress(
                cycle=cycle, key=key, value=_ask_draft(cycle=cycle, patterns=[pattern], base=base)
            )
    progress = _progress(cycle)
    valid = {
        str(p.pk): progress[str(p.pk)] for p in patterns if progress[str(p.pk)]["status"] == "valid"
    }
    created = 0
    for group in overlapping_groups(base=base.documents, drafts=valid):
        chosen: list[tuple[str, dict[str, Any]]] = [(k, valid[k]) for k in group]
        if len(group) > 1:
            key = "+".join(group)
            if key not in progress:
                merged = _ask_draft(
                    cycle=cycle,
                    patterns=[p for p in patterns if str(p.pk) in group],
                    base=base,
                )
                merged["merged_from"] = group
                _save_progress(cycle=cycle, key=key, value=merged)
                progress = _progress(cycle)
            if progress[key]["status"] == "valid":
                chosen = [(key, progress[key])]
        for key, draft in chosen:
            if _create_proposal(cycle=cycle, key=key, draft=draft, base=base) is not None:
                created += 1
    return created
