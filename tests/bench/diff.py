"""Benchmark: diffing and rendering a 128-line policy rewrite, as the proposal page does.

    /work/main/.venv/bin/python tests/bench/diff.py [--smoke]

The rewrite is generated (fixed seed) with what real dream edits do to a policy: words changed
in a third of the rules, two paragraphs reflowed into bullets, one section moved, one new
section, a few rules dropped. Times `reviews.diffs.diff_text` plus rendering the unified and
the side-by-side table with the page's template, and prints p50/p95 of the whole (the budget is
300 ms) next to the standard library's plain `difflib.unified_diff` of the same texts.
"""

import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from _bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_DIFF_LINES=128, BENCH_DIFF_ROUNDS=3)

LINES = int(os.environ.get("BENCH_DIFF_LINES", "128"))
ROUNDS = int(os.environ.get("BENCH_DIFF_ROUNDS", "20"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

WORDS = [
    "refund",
    "order",
    "customer",
    "delivery",
    "window",
    "verify",
    "lookup",
    "escalate",
    "policy",
    "reply",
    "agent",
    "human",
    "receipt",
    "damaged",
    "item",
    "shipping",
    "carrier",
    "return",
    "label",
    "credit",
    "voucher",
    "account",
    "manager",
    "days",
    "always",
    "never",
    "only",
    "when",
    "before",
    "after",
    "check",
    "confirm",
    "quote",
    "explain",
    "apologise",
]


def sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def policy(rng: random.Random, lines: int) -> list[str]:
    """A markdown policy of about `lines` lines: sections of bullets and paragraphs."""
    out: list[str] = ["# Support policy", ""]
    section = 0
    while len(out) < lines:
        section += 1
        out += [f"## Section {section}: {rng.choice(WORDS)} {rng.choice(WORDS)}", ""]
        if section % 3 == 0:
            out += [" ".join(sentence(rng, rng.randint(8, 14)) for _ in range(4)), ""]
        out += [f"- {sentence(rng, rng.randint(6, 16))}" for _ in range(rng.randint(5, 9))]
        out.append("")
    return out[:lines]


def rewrite(rng: random.Random, old: list[str]) -> list[str]:
    new: list[str] = []
    for line in old:
        if line.startswith("- ") and rng.random() < 0.33:
            words = line.split()
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(1, len(words))] = rng.choice(WORDS)
            new.append(" ".join(words))
        elif line.startswith("- ") and rng.random() < 0.05:
            continue  # a rule dropped
        elif len(line) > 200:
            new += [f"- {s.strip()}." for s in line.split(".") if s.strip()]  # reflowed
        else:
            new.append(line)
    # Move one section to the end and add a new one in the middle.
    heads = [i for i, line in enumerate(new) if line.startswith("## ")]
    if len(heads) > 3:
        start, end = heads[1], heads[2]
        moved = new[start:end]
        del new[start:end]
        new += [""] + moved
    middle = len(new) // 2
    new[middle:middle] = [
        "## When the customer asks for a manager",
        "",
        "- Offer a human agent and quote the order number.",
        "",
    ]
    return new


def main() -> None:
    import difflib

    import django

    django.setup()
    from django.template.loader import render_to_string

    from reviews.diffs import diff_text

    rng = random.Random(7)
    old_lines = policy(rng, LINES)
    new_lines = rewrite(rng, old_lines)
    old, new = "\n".join(old_lines), "\n".join(new_lines)

    def page() -> None:
        doc = diff_text("policies/support.md", old, new)
        for view in ("unified", "split"):
            render_to_string(
                "reviews/_diff.html", {"docs": [doc], "view": view, "can_comment": True}
            )

    def baseline() -> None:
        "".join(difflib.unified_diff(old_lines, new_lines, lineterm=""))

    page()  # template loading and compilation: once per process
    timings, base = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        page()
        timings.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        baseline()
        base.append((time.perf_counter() - start) * 1000)
    doc = diff_text("policies/support.md", old, new)
    timings.sort()
    figure("diff_lines", f"{len(old_lines)} → {len(new_lines)}", "lines")
    figure("diff_moved_lines", doc.moved, "lines")
    figure("diff_new_headings", len(doc.new_headings), "")
    figure("baseline_difflib_unified_p50", statistics.median(base), "ms")
    figure("diff_render_p50", statistics.median(timings), "ms")
    figure("diff_render_p95", timings[max(0, round(0.95 * len(timings)) - 1)], "ms")
    if timings[-1] > 300 and not os.environ.get("BENCH_NO_BUDGET"):
        print(f"over budget: slowest {timings[-1]:.0f} ms > 300 ms", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
