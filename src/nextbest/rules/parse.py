"""A parser for a common subset of CEL, to a small syntax tree: what ``rules.compiled`` turns
into Python closures. CEL stays the rule language; a rule outside the subset is simply not
parsed (``parse`` returns None) and runs in the CEL engine as written.

The subset: literals (int, double, string with simple escapes, bool, null, lists of
literals and of expressions), identifiers, ``a.b``, ``!``, unary ``-``, ``* / %``, ``+ -``,
``< <= > >= == != in``, ``&&``, ``||``, ``? :``, indexing ``a[i]``, global calls ``size(x)``
and ``has(a.b)``, and method calls ``x.f(args)`` (which ones compile is ``rules.compiled``'s
choice). Not in it: map literals, raw, bytes and triple-quoted strings, unsigned and hex
numbers, a leading-dot name. Nothing here runs code: it only builds data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Binary",
    "Call",
    "Cond",
    "Ident",
    "Index",
    "ListOf",
    "Literal",
    "Node",
    "Select",
    "Unary",
    "parse",
    "parsed",
]


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # int, float, str, bool or None


@dataclass(frozen=True, slots=True)
class ListOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Ident:
    name: str


@dataclass(frozen=True, slots=True)
class Select:
    operand: Node
    field: str


@dataclass(frozen=True, slots=True)
class Index:
    """``operand[index]``: a map's value at a key, a list's item at a position."""

    operand: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args)`` (``target`` None) or ``target.name(args)``."""

    name: str
    target: Node | None
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "!" or "-"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # || && < <= > >= == != in + - * / %
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Cond:
    test: Node
    then: Node
    other: Node


Node = Literal | ListOf | Ident | Select | Index | Call | Unary | Binary | Cond

_I64_MAX = 2**63 - 1

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<double>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||<=|>=|==|!=|[-+*/%<>!?:.,()\[\]])
  | (?P<other>.)
    """,
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_KEYWORDS = {"true": True, "false": False, "null": None}
_RESERVED = frozenset(
    {"in", "as", "break", "const", "continue", "else", "for", "function", "if", "import"}
    | {"let", "loop", "package", "namespace", "return", "var", "void", "while"}
)
_RELATIONS = frozenset({"<", "<=", ">", ">=", "==", "!=", "in"})


class _Unsupported(Exception):
    """Outside the subset: the rule runs in CEL as written."""


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise _Unsupported(f"escape \\{nxt}")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokens(source: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "space":
            continue
        if kind == "other":
            raise _Unsupported("a map literal" if text == "{" else text)
        if kind == "int":
            # a number glued to a letter (1u, 0x1f) or too large is CEL's to read
            end = m.end()
            if end < len(source) and (source[end].isalnum() or source[end] == "_"):
                raise _Unsupported(source[m.start() : end + 1])  # 1u, 0x...
            value = int(text)
            out.append(("lit", value))
        elif kind == "double":
            out.append(("lit", float(text)))
        elif kind == "string":
            start = m.start()
            if start > 0 and (source[start - 1].isalnum() or source[start - 1] == "_"):
                raise _Unsupported("a raw or bytes string")  # r"..", b".."
            if text[:3] in ('"""', "'''"):
                raise _Unsupported("triple-quoted string")
            out.append(("lit", _unescape(text[1:-1])))
        elif kind == "ident":
            if text in _KEYWORDS:
                out.append(("lit", _KEYWORDS[text]))
            elif text == "in":
                out.append(("op", "in"))
            elif text in _RESERVED:
                raise _Unsupported(text)
            else:
                out.append(("ident", text))
        else:
            out.append(("op", text))
    out.append(("end", None))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.i]

    def is_op(self, *ops: str) -> bool:
        kind, value = self.tokens[self.i]
        return kind == "op" and value in ops

    def take(self) -> tuple[str, Any]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        if not self.is_op(op):
            raise _Unsupported(f"expected {op}")
        self.i += 1

    def expr(self) -> Node:
        test = self.or_()
        if self.is_op("?"):
            self.i += 1
            then = self.or_()
            self.expect(":")
            return Cond(test, then, self.expr())
        return test

    def or_(self) -> Node:
        node = self.and_()
        while self.is_op("||"):
            self.i += 1
            node = Binary("||", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.relation()
        while self.is_op("&&"):
            self.i += 1
            node = Binary("&&", node, self.relation())
        return node

    def relation(self) -> Node:
        node = self.addition()
        while self.peek()[0] == "op" and self.peek()[1] in _RELATIONS:
            op = self.take()[1]
            node = Binary(op, node, self.addition())
        return node

    def addition(self) -> Node:
        node = self.multiplication()
        while self.is_op("+", "-"):
            op = self.take()[1]
            node = Binary(op, node, self.multiplication())
        return node

    def multiplication(self) -> Node:
        node = self.unary()
        while self.is_op("*", "/", "%"):
            op = self.take()[1]
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.is_op("!"):
            self.i += 1
            return Unary("!", self.unary())
        if self.is_op("-"):
            self.i += 1
            operand = self.unary()
            if isinstance(operand, Literal) and type(operand.value) in (int, float):
                return Literal(-operand.value)  # CEL reads -5 as one literal
            return Unary("-", operand)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.is_op("."):
                self.i += 1
                kind, name = self.take()
                if kind != "ident":
                    raise _Unsupported("a field must be a name")
                node = Call(name, node, self.args(")")) if self.is_op("(") else Select(node, name)
            elif self.is_op("["):
                self.i += 1
                index = self.expr()
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def args(self, close: str) -> tuple[Node, ...]:
        self.i += 1  # the opening bracket
        items: list[Node] = []
        if self.is_op(close):
            self.i += 1
            return ()
        while True:
            items.append(self.expr())
            if self.is_op(","):
                self.i += 1
                if self.is_op(close):  # a trailing comma
                    self.i += 1
                    return tuple(items)
                continue
            self.expect(close)
            return tuple(items)

    def primary(self) -> Node:
        kind, value = self.peek()
        if kind == "lit":
            self.i += 1
            if type(value) is int and value > _I64_MAX:
                raise _Unsupported("int out of range")
            return Literal(value)
        if kind == "ident":
            self.i += 1
            if self.is_op("("):
                return Call(value, None, self.args(")"))
            return Ident(value)
        if self.is_op("("):
            self.i += 1
            node = self.expr()
            self.expect(")")
            return node
        if self.is_op("["):
            return ListOf(self.args("]"))
        raise _Unsupported(f"{kind} {value!r}")


def parse(source: str) -> Node | None:
    """The syntax tree of ``source``, or None when it is outside the subset (or not CEL)."""
    tree = parsed(source)
    return tree if not isinstance(tree, str) else None


def parsed(source: str) -> Node | str:
    """The syntax tree of ``source``, or what took it outside the subset: the text the parser
    stopped at (``{`` of a map literal, ``1u``, ``r"``...) or why."""
    try:
        parser = _Parser(_tokens(source))
        node = parser.expr()
        kind, value = parser.peek()
        if kind != "end":
            return str(value) if value is not None else kind
    except _Unsupported as exc:
        return str(exc)
    except RecursionError:
        return "a rule nested too deep"
    return node
