"""One evaluation environment per decision: variables converted to CEL once, rules many times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cel

from nextbest.rules.expression import Rule, RuleOutcome, outcome_of

__all__ = ["Evaluation"]


class Evaluation:
    """Holds a ``cel.Context`` built from rule variables; ``check`` runs one compiled rule.

    ``programs``: a rule's program rewritten for these variables (``RuleReads`` flattens
    ``root.a.b`` chains to one variable each); a rule without one runs as written."""

    __slots__ = ("_context", "_programs", "variables")

    def __init__(
        self, variables: dict[str, Any], programs: Mapping[Rule, Any] | None = None
    ) -> None:
        self.variables = variables
        self._programs: Mapping[Rule, Any] = programs if programs is not None else {}
        self._context = cel.Context(variables=variables)

    def bind(self, name: str, value: Any) -> None:
        self.variables[name] = value
        self._context.add_variable(name, value)

    def check(self, rule: Rule) -> RuleOutcome:
        program = self._programs.get(rule)
        if program is None:
            return rule.check(self._context)
        return outcome_of(program, self._context)
