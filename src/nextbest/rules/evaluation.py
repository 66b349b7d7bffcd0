"""One evaluation environment per decision: variables converted to CEL once, rules many times."""

from __future__ import annotations

from typing import Any

import cel

from nextbest.rules.expression import Rule, RuleOutcome

__all__ = ["Evaluation"]


class Evaluation:
    """Holds a ``cel.Context`` built from rule variables; ``check`` runs one compiled rule."""

    __slots__ = ("_context", "variables")

    def __init__(self, variables: dict[str, Any]) -> None:
        self.variables = variables
        self._context = cel.Context(variables=variables)

    def bind(self, name: str, value: Any) -> None:
        self.variables[name] = value
        self._context.add_variable(name, value)

    def check(self, rule: Rule) -> RuleOutcome:
        return rule.check(self._context)
