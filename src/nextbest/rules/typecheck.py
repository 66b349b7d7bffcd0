"""A rule type checker: what a compiler says before a rule ever runs.

CEL compiles a rule without knowing its variables, so ``interest.mortgage.count_30days``,
``profile.agee``, ``profile.age >= "18"`` or a bare ``5`` compile, and at run time the rule
fails (the offer is silently ``rule_error``) or is always false. ``check_rule`` walks the
rule's syntax tree (``rules.parse``) against the type of every variable rules can see
(``rules.schema``) and lists what is wrong, each with the rule text at fault:

- a name or field that does not exist (with "did you mean" from the names that do);
- a function the rules engine does not have (it fails at run time);
- comparisons between values of different types (``int >= string`` is an error at run time,
  ``int == string`` is always false), arithmetic that mixes ints and doubles;
- a string compared with a value a field never takes (``profile.lifecycle == "retiree"``);
- ``&&``, ``||``, ``!``, ``?:`` and macros given something other than a condition;
- a rule whose result is not a condition (``5``, ``profile.age``).

A rule outside the parser's subset (map literals) is checked by its field paths
alone (``rules.reads.needs_of``). Pure: names in, messages out.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping

from nextbest.rules.parse import (
    Binary,
    Call,
    Cond,
    Ident,
    Index,
    ListOf,
    Literal,
    Node,
    Select,
    Unary,
)
from nextbest.rules.parse import parse as parse_rule
from nextbest.rules.reads import Need, needs_of
from nextbest.rules.schema import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    Kind,
    RuleType,
    list_of,
)

__all__ = ["FUNCTIONS", "METHODS", "check_rule", "did_you_mean", "show"]

#: global functions the rules engine has, by the type they return (``has`` and ``size`` are
#: checked on their own)
FUNCTIONS: dict[str, RuleType] = {
    "size": INT,
    "has": BOOL,
    "int": INT,
    "uint": INT,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
    "dyn": DYN,
    "timestamp": TIMESTAMP,
    "duration": DURATION,
    "type": DYN,
}
_STRING_METHODS = ("contains", "startsWith", "endsWith", "matches")
_TIME_METHODS = (
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfYear",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
)
_MACROS = ("all", "exists", "exists_one", "map", "filter")
#: methods the rules engine has (``x.name(...)``)
METHODS: tuple[str, ...] = ("size", *_STRING_METHODS, *_TIME_METHODS, *_MACROS)
_ORDERED = frozenset({Kind.INT, Kind.DOUBLE, Kind.STRING, Kind.BOOL, Kind.TIMESTAMP})
_ORDERED |= {Kind.DURATION, Kind.BYTES}


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "", *, quote: str = "") -> str:
    """`` (did you mean prefix+x?)`` for the closest of ``choices`` (in ``quote`` marks), or
    ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {quote}{prefix}{close[0]}{quote}?)" if close else ""


def check_rule(source: str, roots: Mapping[str, RuleType]) -> list[str]:
    """What is wrong with rule ``source`` over variables typed ``roots``: one message each,
    in the order found; empty when nothing is."""
    tree = parse_rule(source)
    if tree is None:
        return _check_paths(needs_of(source, roots), roots)
    checker = _Checker(roots)
    result = checker.type_of(tree)
    if result.kind not in (Kind.BOOL, Kind.DYN) and not checker.problems:
        checker.problems.append(_not_a_condition(tree, result))
    return checker.problems


def _not_a_condition(tree: Node, result: RuleType) -> str:
    if isinstance(tree, Literal):
        what = "a number" if result.numeric else result.described
        return (
            f"the rule is {show(tree)}, {what}, not a condition: a rule must be true or "
            "false, such as profile.age >= 18"
        )
    message = (
        f"the rule gives {result.described} ({show(tree)}), not a condition: a rule must be "
        "true or false"
    )
    return message + (f"; compare it, such as {show(tree)} > 0" if result.numeric else "")


# ------------------------------------------------------------------ showing a node


def show(node: Node) -> str:
    """``node`` written back as CEL (for messages)."""
    if isinstance(node, Literal):
        value = node.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        return repr(value)
    if isinstance(node, ListOf):
        return "[" + ", ".join(show(i) for i in node.items) + "]"
    if isinstance(node, Ident):
        return node.name
    if isinstance(node, Select):
        return f"{_inner(node.operand)}.{node.field}"
    if isinstance(node, Index):
        return f"{_inner(node.operand)}[{show(node.index)}]"
    if isinstance(node, Call):
        args = ", ".join(show(a) for a in node.args)
        if node.target is None:
            return f"{node.name}({args})"
        return f"{_inner(node.target)}.{node.name}({args})"
    if isinstance(node, Unary):
        return f"{node.op}{_inner(node.operand)}"
    if isinstance(node, Binary):
        return f"{_inner(node.left)} {node.op} {_inner(node.right)}"
    return f"{_inner(node.test)} ? {_inner(node.then)} : {_inner(node.other)}"


def _inner(node: Node) -> str:
    text = show(node)
    return f"({text})" if isinstance(node, Binary | Cond) else text


# ------------------------------------------------------------------ the checker


class _Checker:
    """Types each node; a node found wrong is reported once and typed DYN after, so one
    mistake is one message."""

    def __init__(self, roots: Mapping[str, RuleType]) -> None:
        self.roots = roots
        self.problems: list[str] = []
        self.scopes: list[dict[str, RuleType]] = []

    def report(self, message: str) -> RuleType:
        if message not in self.problems:
            self.problems.append(message)
        return DYN

    def type_of(self, node: Node) -> RuleType:
        if isinstance(node, Literal):
            return _literal_type(node.value)
        if isinstance(node, ListOf):
            return list_of(_join([self.type_of(i) for i in node.items]))
        if isinstance(node, Ident):
            return self._ident(node.name)
        if isinstance(node, Select):
            return self._select(node, self.type_of(node.operand))
        if isinstance(node, Index):
            return self._index(node, self.type_of(node.operand), self.type_of(node.index))
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, Unary):
            return self._unary(node)
        if isinstance(node, Binary):
            return self._binary(node)
        return self._cond(node)

    # -------------------------------------------------------------- names and fields
    def _ident(self, name: str) -> RuleType:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        found = self.roots.get(name)
        if found is not None:
            return found
        return self.report(
            f"unknown name {name}{did_you_mean(name, self.roots)}; rules may use "
            + ", ".join(sorted(self.roots))
        )

    def _select(self, node: Select, parent: RuleType) -> RuleType:
        if parent.kind is Kind.DYN:
            return DYN
        if parent.kind is not Kind.MAP:
            return self.report(
                f"{show(node.operand)} is {parent.described}: it has no field {node.field} "
                f"({show(node)})"
            )
        if parent.fields is None:
            return parent.item or DYN
        found = parent.fields.get(node.field)
        if found is not None:
            return found
        return self.report(_unknown_field(node, parent))

    def _index(self, node: Index, parent: RuleType, key: RuleType) -> RuleType:
        """``list[int]``, ``map[string]`` (a record's key must be one of its fields)."""
        if parent.kind is Kind.DYN:
            return DYN
        if parent.kind is Kind.LIST:
            if key.kind not in (Kind.INT, Kind.DYN):
                return self.report(
                    f"{show(node)}: a list's position is an int, not {key.described}"
                )
            return parent.item or DYN
        if parent.kind is not Kind.MAP:
            return self.report(
                f"{show(node.operand)} is {parent.described}: it cannot be indexed ({show(node)})"
            )
        if key.kind not in (Kind.STRING, Kind.DYN):
            return self.report(
                f"{show(node)}: the keys of {show(node.operand)} are strings, not {key.described}"
            )
        if parent.fields is None:
            return parent.item or DYN
        name = node.index.value if isinstance(node.index, Literal) else None
        if isinstance(name, str):
            found = parent.fields.get(name)
            return found if found is not None else self.report(_unknown_field(node, parent))
        return _join(list(parent.fields.values()))

    # -------------------------------------------------------------- calls
    def _call(self, node: Call) -> RuleType:
        if node.target is None:
            return self._function(node)
        if node.name in _MACROS:
            return self._macro(node)
        target = self.type_of(node.target)
        args = [self.type_of(a) for a in node.args]
        if node.name == "size":
            return self._sized(node.target, target)
        if node.name in _STRING_METHODS:
            if target.kind not in (Kind.STRING, Kind.DYN):
                return self.report(
                    f"{show(node.target)} is {target.described}: .{node.name}() works on strings"
                )
            for arg, t in zip(node.args, args, strict=True):
                if t.kind not in (Kind.STRING, Kind.DYN):
                    self.report(f"{show(node)}: {show(arg)} is {t.described}, not a string")
            return BOOL
        if node.name in _TIME_METHODS:
            if target.kind not in (Kind.TIMESTAMP, Kind.DURATION, Kind.DYN):
                return self.report(
                    f"{show(node.target)} is {target.described}: .{node.name}() works on timestamps"
                )
            return INT
        return self.report(
            f"unknown function .{node.name}() in {show(node)}"
            f"{did_you_mean(node.name, METHODS, '.')}: the rules engine does not have it, so "
            "the rule fails when it runs"
        )

    def _function(self, node: Call) -> RuleType:
        if node.name == "has":
            return self._has(node)
        args = [self.type_of(a) for a in node.args]
        if node.name == "size" and len(node.args) == 1:
            return self._sized(node.args[0], args[0])
        found = FUNCTIONS.get(node.name)
        if found is None:
            return self.report(
                f"unknown function {node.name}() in {show(node)}"
                f"{did_you_mean(node.name, FUNCTIONS)}: the rules engine does not have it, so "
                "the rule fails when it runs"
            )
        return found

    def _has(self, node: Call) -> RuleType:
        (arg,) = node.args if len(node.args) == 1 else (None,)
        if not isinstance(arg, Select):
            return self.report(f"{show(node)}: has() takes a field, such as has(traits.children)")
        parent = self.type_of(arg.operand)
        if parent.kind is Kind.MAP and parent.fields is not None and arg.field not in parent.fields:
            self.report(_unknown_field(arg, parent))
        elif parent.kind not in (Kind.MAP, Kind.DYN):
            self.report(
                f"{show(arg.operand)} is {parent.described}: it has no fields ({show(node)})"
            )
        return BOOL

    def _sized(self, operand: Node, t: RuleType) -> RuleType:
        if t.kind in (Kind.LIST, Kind.MAP, Kind.STRING, Kind.BYTES, Kind.DYN):
            return INT
        return self.report(
            f"{show(operand)} is {t.described}: size() counts a list, a map or a string"
        )

    def _macro(self, node: Call) -> RuleType:
        assert node.target is not None
        target = self.type_of(node.target)
        names = [a.name for a in node.args[:-1] if isinstance(a, Ident)]
        if not node.args or len(names) != len(node.args) - 1 or not 1 <= len(names) <= 2:
            return self.report(
                f"{show(node)}: .{node.name}() takes a variable name and an expression, such "
                f'as products.{node.name}(p, p == "mortgage")'
            )
        if target.kind is Kind.LIST:
            bound = [target.item or DYN] if len(names) == 1 else [INT, target.item or DYN]
        elif target.kind is Kind.MAP:
            value = target.item or DYN
            if target.fields is not None:
                value = _join(list(target.fields.values()))
            bound = [STRING] if len(names) == 1 else [STRING, value]
        elif target.kind is Kind.DYN:
            bound = [DYN] * len(names)
        else:
            return self.report(
                f"{show(node.target)} is {target.described}: .{node.name}() works on a list "
                "or a map"
            )
        self.scopes.append(dict(zip(names, bound, strict=True)))
        try:
            body = self.type_of(node.args[-1])
        finally:
            self.scopes.pop()
        if node.name == "map":
            return list_of(body)
        if body.kind not in (Kind.BOOL, Kind.DYN):
            self.report(
                f"{show(node.args[-1])} is {body.described}, not a condition: "
                f".{node.name}() needs true or false for each item"
            )
        if node.name == "filter":
            return target if target.kind is Kind.LIST else list_of(bound[0])
        return BOOL

    # -------------------------------------------------------------- operators
    def _condition(self, node: Node, where: str) -> None:
        t = self.type_of(node)
        if t.kind not in (Kind.BOOL, Kind.DYN):
            self.report(f"{show(node)} is {t.described}, not a condition: {where}")

    def _unary(self, node: Unary) -> RuleType:
        if node.op == "!":
            self._condition(node.operand, "! needs true or false")
            return BOOL
        t = self.type_of(node.operand)
        if t.numeric or t.kind in (Kind.DYN, Kind.DURATION):
            return t
        return self.report(f"-{show(node.operand)}: {t.described} has no sign")

    def _binary(self, node: Binary) -> RuleType:
        op = node.op
        if op in ("&&", "||"):
            where = f"both sides of {op} must be true or false"
            self._condition(node.left, where)
            self._condition(node.right, where)
            return BOOL
        left, right = self.type_of(node.left), self.type_of(node.right)
        if op in ("<", "<=", ">", ">="):
            self._ordered(node, left, right)
            return BOOL
        if op in ("==", "!="):
            self._equality(node, left, right)
            return BOOL
        if op == "in":
            self._membership(node, left, right)
            return BOOL
        return self._arithmetic(node, left, right)

    def _ordered(self, node: Binary, left: RuleType, right: RuleType) -> None:
        if Kind.DYN in (left.kind, right.kind) or (left.numeric and right.numeric):
            return
        if left.kind is right.kind and left.kind in _ORDERED:
            return
        self.report(_mismatch(node, left, right, ordered=True))

    def _equality(self, node: Binary, left: RuleType, right: RuleType) -> None:
        if Kind.DYN in (left.kind, right.kind) or (left.numeric and right.numeric):
            self._values(node.left, left, node.right)
            self._values(node.right, right, node.left)
            return
        if left.kind is not right.kind:
            self.report(_mismatch(node, left, right, ordered=False))
            return
        self._values(node.left, left, node.right)
        self._values(node.right, right, node.left)

    def _values(self, side: Node, t: RuleType, other: Node) -> None:
        """``other`` is a string literal that ``side`` (a field of fixed values) never is."""
        if t.values is None or not isinstance(other, Literal) or not isinstance(other.value, str):
            return
        if other.value not in t.values:
            hint = did_you_mean(other.value, t.values, quote='"')
            self.report(
                f"{show(side)} is never {show(other)}{hint}: it is one of " + ", ".join(t.values)
            )

    def _membership(self, node: Binary, left: RuleType, right: RuleType) -> None:
        if right.kind is Kind.DYN:
            return
        if right.kind is Kind.LIST:
            item = right.item or DYN
            if isinstance(node.right, ListOf):
                for literal in node.right.items:
                    self._values(node.left, left, literal)
            if Kind.DYN in (left.kind, item.kind) or (left.numeric and item.numeric):
                return
            if left.kind is not item.kind:
                self.report(
                    f"{show(node)}: {show(node.left)} is {left.described} and "
                    f"{show(node.right)} holds {_plural(item)}: it is never in it"
                )
            return
        if right.kind is Kind.MAP:
            if left.kind not in (Kind.STRING, Kind.DYN):
                self.report(
                    f"{show(node)}: {show(node.left)} is {left.described}, and the keys of "
                    f"{show(node.right)} are strings: it is never in it"
                )
            elif (
                right.fields is not None
                and isinstance(node.left, Literal)
                and node.left.value not in right.fields
            ):
                self.report(
                    f"{show(node)} is never true: {show(node.right)} has no key "
                    f"{show(node.left)}{did_you_mean(str(node.left.value), right.fields)}"
                )
            return
        self.report(
            f"{show(node)}: in needs a list or a map on its right, and {show(node.right)} is "
            f"{right.described}"
        )

    def _arithmetic(self, node: Binary, left: RuleType, right: RuleType) -> RuleType:
        op = node.op
        if Kind.DYN in (left.kind, right.kind):
            return DYN
        time_kinds = (Kind.TIMESTAMP, Kind.DURATION)
        if left.kind in time_kinds or right.kind in time_kinds:
            return DYN  # timestamp - timestamp, timestamp + duration: CEL's to say
        if left.kind is right.kind:
            if left.kind is Kind.INT:
                return INT
            if left.kind is Kind.DOUBLE and op != "%":
                return DOUBLE
            if op == "+" and left.kind in (Kind.STRING, Kind.LIST, Kind.BYTES):
                return left
        if left.numeric and right.numeric:
            return self.report(
                f"{show(node)} mixes an int and a double: CEL does not convert between them, "
                "so the rule fails when it runs; write the int as a double (2.0) or convert "
                "it with double(...)"
            )
        return self.report(
            f"{show(node)}: {op} does not apply to {left.described} and {right.described}"
        )

    def _cond(self, node: Cond) -> RuleType:
        self._condition(node.test, "the test of ?: must be true or false")
        return _join([self.type_of(node.then), self.type_of(node.other)])


# ------------------------------------------------------------------ helpers


def _literal_type(value: object) -> RuleType:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    return STRING


def _join(types: list[RuleType]) -> RuleType:
    """The one type of several values (a list's items, both sides of ?:), or DYN."""
    if not types:
        return DYN
    first = types[0]
    if all(t.kind is first.kind for t in types):
        return first if all(t is first for t in types) else RuleType(first.kind)
    return DYN


def _plural(t: RuleType) -> str:
    return {Kind.INT: "ints", Kind.DOUBLE: "doubles", Kind.STRING: "strings"}.get(
        t.kind, f"{t.kind.value} values"
    )


def _mismatch(node: Binary, left: RuleType, right: RuleType, *, ordered: bool) -> str:
    """``x >= "18"`` compares an int with a string: ..."""
    outcome = (
        "CEL never converts between them, so the rule fails when it runs"
        if ordered
        else "they are never equal"
    )
    message = f"{show(node)} compares {left.described} with {right.described}: {outcome}"
    for side, other in ((node.right, left), (node.left, right)):
        text = side.value if isinstance(side, Literal) else None
        if isinstance(text, str) and other.numeric and _is_number(text):
            return message + f" (write {text} without quotes)"
    return message


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown_field(node: Select | Index, parent: RuleType) -> str:
    """A field (``a.b``) or a literal key (``a["b"]``) a record does not have."""
    fields = parent.fields or {}
    path = show(node)
    base = show(node.operand)
    if isinstance(node, Select):
        what, hint = "field", did_you_mean(node.field, fields, base + ".")
    else:
        assert isinstance(node.index, Literal)
        what, hint = "key", did_you_mean(str(node.index.value), fields, quote='"')
    if parent.catalog:
        return f"{path} is not defined in the catalog{hint}"
    listed = "" if hint else f"; {base} has " + ", ".join(fields)
    return f"unknown {what} {path}{hint}{listed}"


# ------------------------------------------------------------------ paths only


def _check_paths(needs: Mapping[str, Need], roots: Mapping[str, RuleType]) -> list[str]:
    """Unknown names and fields along the plain ``a.b.c`` paths of a rule outside the
    parser's subset."""
    problems: list[str] = []

    def walk(need: Need, t: RuleType, path: str) -> None:
        if need is None or t.kind is Kind.DYN:
            return
        for name, sub in need.items():
            node = Select(Ident(path), name)  # shown as path.name
            if t.kind is not Kind.MAP:
                problems.append(f"{path} is {t.described}: it has no field {name}")
            elif t.fields is None:
                walk(sub, t.item or DYN, f"{path}.{name}")
            elif name in t.fields:
                walk(sub, t.fields[name], f"{path}.{name}")
            else:
                problems.append(_unknown_field(node, t))

    for root, need in needs.items():
        walk(need, roots.get(root, DYN), root)
    return problems
