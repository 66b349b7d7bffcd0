"""One evaluation environment per decision.

``LazyEvaluation`` (what ``RuleReads.evaluation`` gives): a rule's compiled closures decide it
when they can, reading each value on first need; otherwise the rule runs in CEL, in a
``cel.Context`` built on the first such rule and given only the variables the rules run
there read. ``Evaluation``: every variable converted to CEL up front, every rule in CEL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import cel

from nextbest.rules.compiled import MISSING, UNSET, Decider, Frame, Getter, Undecided
from nextbest.rules.expression import Rule, RuleOutcome, outcome_of

__all__ = ["Evaluation", "Fallback", "LazyEvaluation", "RulePlan"]

# an enum member read through its class costs more than a rule: read them once
_TRUE, _FALSE, _ERROR = RuleOutcome.TRUE, RuleOutcome.FALSE, RuleOutcome.ERROR


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


#: what a rule reads when it runs in CEL: its flat variables (name, slot) and nested roots
Fallback = tuple[tuple[tuple[str, int], ...], tuple[str, ...]]


class RulePlan(NamedTuple):
    """What a catalog's rules need per decision, fixed when the catalog compiles.

    ``getters``: slot ``i``'s value; ``deciders``: the rules compiled to closures, each
    returning its rule's outcome;
    ``programs``: the rules rewritten for CEL; ``fallbacks``: what each rule reads in CEL
    (key None: a rule not compiled with the catalog); ``roots``: each nested root's
    builder, narrowed to what the rules read; ``preset``: slots a view masks, set when the
    evaluation starts (None: absent, else the getter of the masked value), because the
    closures call their slot's getter themselves."""

    getters: Sequence[Getter]
    deciders: Mapping[Rule, Decider]
    programs: Mapping[Rule, Any]
    fallbacks: Mapping[Rule | None, Fallback]
    roots: Mapping[str, Callable[[Any, Any, float, Any], Any]]
    preset: tuple[tuple[int, Getter | None], ...] = ()


class LazyEvaluation(Frame):
    """One decision: ``check(rule)`` by closures when they decide, by CEL otherwise; the
    same outcome either way (``rules.compiled``). ``cel_checks``: the rules this decision
    ran in CEL so far."""

    __slots__ = ("_added", "_context", "_deciders", "_plan", "cel_checks")

    def __init__(self, plan: RulePlan, args: tuple[Any, Any, float, Any]) -> None:
        super().__init__(plan.getters, args)
        if plan.preset:
            values = self.values
            for i, get in plan.preset:
                values[i] = MISSING if get is None else get(*args)
        self._plan = plan
        self._deciders = plan.deciders
        self._context: Any = None
        self._added: set[str]  # the variables in ``_context``: set with it
        self.cel_checks = 0

    def bind(self, name: str, value: Any) -> None:
        """Bind a variable the rules read by name (``segments``). It reaches the CEL context
        only when a rule run there reads it (converting a map of 50 segments costs more than
        most rules)."""
        self.bound[name] = value
        if self._context is not None and name in self._added:
            self._context.add_variable(name, value)

    def check(self, rule: Rule) -> RuleOutcome:
        decide = self._deciders.get(rule)
        if decide is not None:
            try:
                return decide(self)
            except Undecided:
                pass
        return self.check_cel(rule)

    def by_closures(self, rule: Rule) -> RuleOutcome | None:
        """``rule``'s outcome as its closures decide it, or None when they do not (``check``
        then runs it in CEL)."""
        decide = self._deciders.get(rule)
        if decide is None:
            return None
        try:
            return decide(self)
        except Undecided:
            return None

    def check_cel(self, rule: Rule) -> RuleOutcome:
        """The rule in CEL, with the variables it reads added to this decision's context."""
        self.cel_checks += 1
        plan = self._plan
        context = self._context
        if context is None:
            context = self._context = cel.Context()
            self._added = set()
        fallback = plan.fallbacks.get(rule)
        flat, roots = fallback if fallback is not None else plan.fallbacks[None]
        added = self._added
        for name, i in flat:
            if name not in added:
                added.add(name)
                value = self.values[i]
                if value is UNSET:
                    value = self.fill(i)
                if value is not MISSING:
                    context.add_variable(name, value)
        bound = self.bound
        for root in roots:
            if root in added:
                continue
            if root == "segments":  # bound by name after the segment rules: unbound till then
                if root in bound:
                    added.add(root)
                    context.add_variable(root, bound[root])
                continue
            added.add(root)
            value = plan.roots[root](*self.args)
            if value is not MISSING:  # a root a view hides: unbound, as absent
                context.add_variable(root, value)
        program = plan.programs.get(rule)
        if program is None:
            return rule.check(context)
        return outcome_of(program, context)
