"""Guardrail block patterns: compiled by RE2, so matching time is linear in the input.

Patterns come from CRs that many people can write, and a backtracking engine lets one
pattern (`(a+)+$`) pin a CPU for hours. `compile_pattern` is the one definition of what a
pattern may be, used by the operator (CR validation -> `InvalidSpec`), by the contract (a
compiled config that carries an unbounded pattern is refused on load) and by the sidecar
(matching). What RE2 cannot bound (backreferences, lookaround) or what exceeds the size
limits below is refused with a reason that names the construct.
"""

from __future__ import annotations

from typing import Any

MAX_PATTERN_CHARS = 1024
"""Longest accepted pattern source."""
MAX_PROGRAM_BYTES = 1 << 20
"""Memory RE2 may use for one compiled pattern (1 MiB; its own default is 8 MiB)."""

_HINTS = (
    ("invalid escape sequence: \\", "backreferences (\\1, \\g<name>) need backtracking"),
    ("invalid perl operator: (?<", "lookbehind needs backtracking"),
    ("invalid perl operator: (?=", "lookahead needs backtracking"),
    ("invalid perl operator: (?!", "negative lookahead needs backtracking"),
    ("invalid perl operator: (?>", "atomic groups are not supported"),
    ("pattern too large", "the compiled pattern is too large"),
    ("bad repetition operator", "a repeat of a repeat is not supported"),
    ("invalid repetition size",
     "repetition counts above 1000 (nested counts multiply) are not supported"),
    ("invalid perl operator: (?P", "named backreferences need backtracking"),
)


class PatternError(ValueError):
    """A pattern that cannot be matched in bounded time; the message says why."""


def _options(re2: Any) -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason is raised, not printed to stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


def compile_pattern(pattern: str) -> Any:
    """The RE2 program for `pattern`, or `PatternError` naming what is not allowed."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"pattern is {len(pattern)} characters; at most "
                           f"{MAX_PATTERN_CHARS} are allowed")
    # Imported here: a sidecar whose routes set no pattern never loads RE2 (and the C++
    # runtime it links), 2.2 MiB of its resident set (docs/performance.md).
    import re2

    try:
        compiled = re2.compile(pattern, options=_options(re2))
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        hint = next((h for marker, h in _HINTS if marker in detail), None)
        reason = f"{detail} ({hint}; only linear-time RE2 syntax is accepted)" if hint else \
            f"{detail} (only linear-time RE2 syntax is accepted)"
        raise PatternError(reason) from None
    return compiled


def check_patterns(patterns: list[str]) -> list[str]:
    """Validator for a `blockPatterns` list: every entry must compile."""
    for index, pattern in enumerate(patterns):
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise ValueError(f"blockPatterns[{index}] {pattern!r} is not accepted: {exc}"
                             ) from None
    return patterns
