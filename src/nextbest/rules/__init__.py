"""Rules: small, safe, side-effect-free CEL expressions, compiled once at catalog load."""

from nextbest.rules.context import RULE_ROOTS, rule_variables
from nextbest.rules.evaluation import Evaluation, LazyEvaluation
from nextbest.rules.expression import Rule, RuleOutcome, compile_rule
from nextbest.rules.reads import RuleReads

__all__ = [
    "RULE_ROOTS",
    "Evaluation",
    "LazyEvaluation",
    "Rule",
    "RuleOutcome",
    "RuleReads",
    "compile_rule",
    "rule_variables",
]
