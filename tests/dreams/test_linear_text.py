"""Run text reaches regular expressions in linear time: a 2 MB hostile field takes well under a second.

Each case is the shape that made a pattern backtrack quadratically (a long word with no digit,
unclosed openers, long runs of one character) at the size ingest allows for one run.
"""

import time
from collections.abc import Callable

import pytest

from agents.answer_patterns import PatternError, answer_matches, compile_answer_pattern
from dreams import guards, patterns
from dreams.simulated import agent as simulated_agent
from dreams.simulated import dreaming as simulated_dreaming
from dreams.simulated import judging as simulated_judging

TWO_MB = 2 * 1024 * 1024


def seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@pytest.mark.parametrize(
    "text",
    [
        "a" * TWO_MB,
        "a-" * (TWO_MB // 2),
        "word " * (TWO_MB // 5),
        "1" * TWO_MB,
    ],
    ids=["digit-free word", "hyphenated word", "many words", "all digits"],
)
def test_normalise_reason_is_linear_on_a_2mb_reason(text):
    assert seconds(lambda: patterns.normalise_reason(text)) < 1.0


def test_normalise_reason_still_replaces_numbers_and_ids():
    assert patterns.normalise_reason("Order ORD-1234 refunded 12.50 USD, x.y1 done") == (
        "order # refunded # usd x # done"
    )


def test_protected_blocks_are_found_in_linear_time_with_many_unclosed_openers():
    text = "<!-- protected -->" * (TWO_MB // 18)
    assert seconds(lambda: guards.PROTECTED_BLOCK.findall(text)) < 1.0
    assert seconds(lambda: list(simulated_dreaming.PROTECTED.finditer(text))) < 1.0
    closed = "a <!-- protected -->keep<!-- /protected --> b"
    assert guards.PROTECTED_BLOCK.findall(closed) == ["<!-- protected -->keep<!-- /protected -->"]


HOSTILE = {
    "open parens": "(" * TWO_MB,
    "spaces": " " * TWO_MB,
    "one letter": "a" * TWO_MB,
    "digits": "1" * TWO_MB,
    "because": "because " * (TWO_MB // 8),
    "no tool": "no a_b " * (TWO_MB // 7),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_simulated_models_read_hostile_run_text_in_linear_time(text):
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    assert seconds(lambda: simulated_judging.judge(text, messages)) < 1.0
    assert seconds(lambda: simulated_judging.feedback_clauses(text)) < 1.0
    assert seconds(lambda: simulated_dreaming._general_title(text)) < 1.0
    assert seconds(lambda: simulated_agent.REASON.search(text[:2000])) < 1.0
    assert seconds(lambda: simulated_agent.ORDER_ID.search(text)) < 1.0


def test_the_simulated_judge_still_reads_a_forbidden_tool():
    messages = [
        {"role": "user", "content": "Refund me."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "issue_refund", "input": {}}],
        },
    ]
    verdict, reason = simulated_judging.judge("Never call issue_refund.", messages)
    assert verdict == "fail" and "issue_refund" in reason


def test_an_answer_pattern_cannot_make_grading_hang():
    # Catastrophic for Python's backtracking `re`; RE2 answers in linear time.
    assert seconds(lambda: answer_matches(r"(a+)+$", "a" * TWO_MB + "b")) < 1.0
    assert answer_matches(r"(?i)30[- ]day|outside", "That is OUTSIDE the window.")


def test_a_pattern_re2_cannot_run_is_refused_with_the_reason():
    with pytest.raises(PatternError, match="backreferences and lookaround"):
        compile_answer_pattern(r"(a)\1")


def test_the_number_pattern_alone_is_linear_on_a_2mb_word():
    # normalise_reason reads a prefix; the pattern itself must not be quadratic either.
    assert seconds(lambda: patterns._NUMBERS.sub("#", "a" * TWO_MB)) < 1.0
