"""`expectations.expected_answer_pattern`: a regular expression a run brings, run on model text.

The pattern is untrusted, so it is compiled by RE2 (google-re2), whose matching is linear in the
text: no pattern can make grading hang (Python's `re` backtracks; `(a+)+$` on a long answer
never finishes). RE2 has no backreferences or lookaround; such a pattern is refused at ingest.
"""

from functools import lru_cache
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is a 400, not a line on the worker's stderr
MAX_PATTERN_CHARS = 1000


class PatternError(ValueError):
    """The pattern cannot be used; the message says why."""


@lru_cache(maxsize=256)
def compile_answer_pattern(pattern: str) -> Any:
    """The compiled pattern, or PatternError saying why it is refused."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"must be at most {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(
            f"is not a regular expression RE2 accepts ({detail}); "
            "backreferences and lookaround are not supported"
        ) from None


def answer_matches(pattern: str, text: str) -> bool:
    """Whether the (already validated) pattern occurs in the text; linear time."""
    return compile_answer_pattern(pattern).search(text) is not None
