"""A compiled CEL rule. CEL has no side effects and no code execution; nothing is eval'd."""

from __future__ import annotations

import difflib
import enum
import re
from typing import Any

import cel

from nextbest.errors import RuleError

__all__ = ["Rule", "RuleOutcome", "compile_rule", "outcome_of"]

_FIELD = re.compile(r"\b(segments|interest|offers)\.([A-Za-z_][A-Za-z0-9_]*)")


class RuleOutcome(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"
    ERROR = "error"


class Rule:
    """One compiled expression with its source; ``check`` returns a RuleOutcome."""

    __slots__ = ("_program", "fields", "roots", "source")

    def __init__(self, source: str, program: Any, roots: frozenset[str]) -> None:
        self.source = source
        self._program = program
        self.roots = roots
        #: (root, field) pairs named literally, e.g. ("segments", "young_family"); the
        #: catalog checks they exist.
        self.fields = frozenset(_FIELD.findall(source))

    def check(self, context: Any) -> RuleOutcome:
        """Evaluate against a ``cel.Context``; a non-bool result or a runtime error is ERROR."""
        return outcome_of(self._program, context)

    def __repr__(self) -> str:
        return f"Rule({self.source!r})"


def outcome_of(program: Any, context: Any) -> RuleOutcome:
    """Run a compiled CEL program; a non-bool result or a runtime error is ERROR."""
    try:
        result = program.execute(context)
    except (RuntimeError, ValueError, TypeError, LookupError, ArithmeticError):
        return RuleOutcome.ERROR
    if result is True:
        return RuleOutcome.TRUE
    if result is False:
        return RuleOutcome.FALSE
    return RuleOutcome.ERROR


def compile_rule(source: str, allowed_roots: frozenset[str]) -> Rule:
    """Parse ``source`` once; raise RuleError with the parser's reason."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "does not parse"
        raise RuleError(f"CEL: {reason}") from exc
    refs = program.references()
    comprehension = _comprehension_vars(source)
    roots = frozenset(refs.get("variables", [])) - comprehension
    unknown = sorted(roots - allowed_roots)
    if unknown:
        allowed = ", ".join(sorted(allowed_roots))
        names = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(allowed_roots), n=1, cutoff=0.6)
            names.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise RuleError(f"unknown name(s) {', '.join(names)}; rules may use {allowed}")
    return Rule(source, program, roots)


_MACRO_VAR = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


def _comprehension_vars(source: str) -> frozenset[str]:
    return frozenset(_MACRO_VAR.findall(source))
