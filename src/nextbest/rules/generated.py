"""Rules as generated Python functions: one function per compiled rule, its slot reads and its
comparisons with constants written inline, ``compile()``'d once when the catalog compiles.

A rule's closure tree (``rules.compiled``) makes a Python call per node; here a rule whose
root is a chain of ``&&`` or ``||`` terms (or one term) becomes one function that reads each
slot (``values[i]``, filled by the slot's getter on first read) and tests it against the
constant in place: ``interest.mortgage.count_14d >= 5``, ``profile.lifecycle == "family"``,
``"mortgage" in products``, ``size(products) >= 3``, ``has(profile.consent.marketing)``,
``profile.known``, ``!profile.overdrawn``, ``x == true``, ``x in ["a", "b"]``, two
comparisons of one slot (a band), ``segments.<name>`` and ``!segments.<name>`` (bound by the
caller), and a nested chain of the other operator (``a || (b && c)``, in a one-pass loop a
deciding term leaves). Each inline test covers only the values the closures' fast paths
cover (a small int or a float that is no NaN against a number, a string against a string,
a list or a map for ``in`` and ``size``, a bool for a bare read); a MISSING value (a key the
profile lacks, a read a view hides) is CEL's error, as in the closures; any other value,
and any term of another kind, goes to that term's closure (``Compiler.node``), called from
the generated code. So the outcome is
the closures' outcome for every value: TRUE, FALSE, ERROR, or ``Undecided`` raised (the
rule then runs in CEL). A rule with no term the generator covers keeps its closures.

**Nothing a rule's author wrote becomes code.** The source is generated only from the parsed
syntax tree (``rules.parse``) of a rule the catalog already compiled and type-checked: fixed
text chosen by node kind, operators mapped through a fixed table (never copied from the
tree), slot indices and name counters that are Python ints, and constants embedded with
``repr()`` only after checking that each is exactly an ``int`` (of 64 bits), a finite ``float``, a
``bool`` or a ``str`` (not a subclass, whose ``repr`` could be anything) and that
``ast.literal_eval`` of its ``repr`` gives it back, the same type and value: a string with
quotes, backslashes, newlines or any unicode stays one string literal. Getters, closures
and outcomes are passed in the function's globals by generated names, never as text. The
globals' builtins are only ``type``, ``len`` and the type names a test compares with
(``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from nextbest.errors import RuleError
from nextbest.rules.compiled import (
    MISSING,
    UNSET,
    Closure,
    Compiler,
    Decider,
    Erred,
    Getter,
    HiddenMaps,
    SlotOf,
    Undecided,
    key_in,
)
from nextbest.rules.expression import RuleOutcome
from nextbest.rules.parse import Binary, Call, Ident, ListOf, Literal, Node, Select, Unary

__all__ = ["Generated", "generate"]

_LOW, _HIGH = -(2**53), 2**53  # ints this small convert to double exactly (as in the closures)
#: a slot value the closures compare with a number inline: a small int or a float (no NaN)
_NUMBER = f"(type(v) is int and {_LOW} <= v <= {_HIGH}) or (type(v) is float and v == v)"
#: the operators a term may use, to the text written for them (the tree's text is not used)
_COMPARE = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
_ORDER = frozenset({"<", "<=", ">", ">="})
#: the builtins generated code may name
_BUILTINS = {"type": type, "len": len, "int": int, "float": float, "str": str}
_BUILTINS.update({"bool": bool, "list": list, "dict": dict})


class Generated(NamedTuple):
    """A rule's generated function (``decider``: the rule's outcome, or ``Undecided``
    raised) and the source it was compiled from."""

    source: str
    decider: Decider


def constant(value: Any) -> str:
    """``value``'s Python literal, for a validated constant only (else ``RuleError``)."""
    kind = type(value)
    if kind is float and not math.isfinite(value):
        raise RuleError("not a finite number")
    if kind not in (int, float, bool, str):
        raise RuleError(f"not a constant: {kind.__name__}")
    if kind is int and not -(2**63) <= value < 2**63:
        raise RuleError("not a CEL int")
    text = repr(value)
    back = ast.literal_eval(text)
    if type(back) is not kind or back != value:
        raise RuleError("a constant that does not read back")
    return text


def _number(value: Any) -> bool:
    """A number the closures compare inline: an int or a float with ``|c| <= 2**53``."""
    return type(value) in (int, float) and _LOW <= value <= _HIGH


class _Writer:
    """One rule's source, and the names its code reads (getters, closures, outcomes)."""

    def __init__(self, compiler: Compiler, decides: bool, lone: bool) -> None:
        self.compiler = compiler
        self.decides = decides  # the term value that decides the chain (True for ||)
        #: what a term's non-bool value adds to ``bad``: CEL's error at a lone root, else
        #: undecided (in a chain, CEL decides what a non-bool does)
        self.non_bool = 1 if lone else 2
        #: the chain's state: 0 while every term held, |1 a term erred, |2 one is undecided
        #: (-1 in a nested chain: a term decided it); ``bad``, ``bad1``... by nesting level
        self.bad = "bad"
        self.level = 0
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.inline = 0  # terms tested inline

    # -- names
    def _getter(self, i: int, getter: Getter) -> str:
        if type(i) is not int:
            raise RuleError("a slot index that is no int")
        name = f"_g{i}"
        self.names[name] = getter
        return name

    def _closure(self, closure: Closure) -> str:
        name = f"_c{len(self.names)}"
        self.names[name] = closure
        return name

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    # -- pieces
    def read(self, depth: int, slot: tuple[int, Getter]) -> None:
        i, getter = slot
        g = self._getter(i, getter)
        self.emit(depth, f"v = values[{i}]")
        self.emit(depth, "if v is UNSET:")
        self.emit(depth + 1, f"v = values[{i}] = {g}(*fr.args)")

    def decided(self, depth: int) -> None:
        """A term decided the chain: the rule's outcome at the root, else the nested chain's
        loop left with its state -1."""
        if self.level == 0:
            self.emit(depth, "return _D")
        else:
            self.emit(depth, f"{self.bad} = -1")
            self.emit(depth, "break")

    def decide_if(self, depth: int, test: str) -> None:
        """The chain decided when ``test`` (the term's bool value) decides."""
        self.emit(depth, f"if {test}:" if self.decides else f"if not ({test}):")
        self.decided(depth + 1)

    def fallback(self, depth: int, term: Node) -> None:
        """The term's closure, its value or error folded into the chain's state."""
        c = self._closure(self.compiler.node(term, frozenset()))
        self.emit(depth, "try:")
        self.emit(depth + 1, f"t = {c}(fr)")
        self.emit(depth, "except Erred:")
        self.emit(depth + 1, f"{self.bad} |= 1")
        self.emit(depth, "except Undecided:")
        self.emit(depth + 1, f"{self.bad} |= 2")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"if t is {self.decides}:")
        self.decided(depth + 2)
        self.emit(depth + 1, f"if t is not {not self.decides}:")
        self.emit(depth + 2, f"{self.bad} |= {self.non_bool}")

    def guarded(self, depth: int, fast: str, test: str, terms: list[Node]) -> None:
        """``fast`` holds for ``v``: ``test`` decides or the terms hold; MISSING: erred;
        anything else: the terms' closures."""
        self.inline += len(terms)
        self.emit(depth, f"if {fast}:")
        self.decide_if(depth + 1, test)
        self.emit(depth, "elif v is MISSING:")
        self.emit(depth + 1, f"{self.bad} |= 1")
        self.emit(depth, "else:")
        for term in terms:
            self.fallback(depth + 1, term)

    # -- terms
    def band(self, depth: int, first: Node, second: Node) -> bool:
        """Two comparisons of one slot with numbers, both inline: ``age >= 18 && age < 26``."""
        c = self.compiler
        a, b = c.slot_bound(first, frozenset()), c.slot_bound(second, frozenset())
        if a is None or b is None or a[0] != b[0]:
            return False
        if not (isinstance(first, Binary) and isinstance(first.right, Literal)):
            return False
        if not (isinstance(second, Binary) and isinstance(second.right, Literal)):
            return False
        one = f"v {_COMPARE[first.op]} {constant(first.right.value)}"
        two = f"v {_COMPARE[second.op]} {constant(second.right.value)}"
        self.read(depth, (a[0], a[1]))
        both = f"{one} or {two}" if self.decides else f"{one} and {two}"
        self.guarded(depth, _NUMBER, both, [first, second])
        return True

    def term(self, depth: int, n: Node) -> None:
        """One term: inline when its kind is covered, else its closure."""
        if isinstance(n, Binary) and n.op in _COMPARE and isinstance(n.right, Literal):
            if self._compare(depth, n, n.right.value):
                return
        elif isinstance(n, Binary) and n.op in ("&&", "||"):
            if self._nested(depth, n):
                return
        elif isinstance(n, Binary) and n.op == "in":
            if self._key_in(depth, n, negate=False) or self._in_strings(depth, n):
                return
        elif isinstance(n, Unary) and n.op == "!":
            if (
                self._key_in(depth, n.operand, negate=True)
                or self._not_slot(depth, n.operand)
                or self._segment(depth, n.operand, negate=True)
            ):
                return
        elif isinstance(n, Call) and n.name == "has" and n.target is None and len(n.args) == 1:
            if self._has(depth, n.args[0]):
                return
        elif isinstance(n, Select | Ident):
            slot = self.compiler.slot(n, frozenset())
            if slot is not None:
                self._bare(depth, slot)
                return
            if self._segment(depth, n, negate=False):
                return
        self.fallback(depth, n)

    def _nested(self, depth: int, n: Binary) -> bool:
        """A chain of the other operator as a term (``a || (b && c)``), inline in a one-pass
        loop that a deciding term leaves; its result folded into this chain's state.
        False (nothing written) when none of its terms is inline."""
        start, inline = len(self.lines), self.inline
        saved = (self.decides, self.bad, self.non_bool, self.level)
        self.level += 1
        inner = self.bad = f"bad{self.level}"
        self.decides, self.non_bool = n.op == "||", 2
        self.emit(depth, f"{inner} = 0")
        self.emit(depth, "while True:")
        self.terms(depth + 1, self.compiler.terms(n, n.op))
        self.emit(depth + 1, "break")
        self.decides, self.bad, self.non_bool, self.level = saved
        if self.inline == inline:
            del self.lines[start:]
            return False
        # every inner term held: the inner chain's value is what decides this one
        self.emit(depth, f"if not {inner}:")
        self.decided(depth + 1)
        self.emit(depth, f"elif {inner} > 0:")
        self.emit(depth + 1, f"{self.bad} |= {inner}")
        return True

    def _segment(self, depth: int, n: Node, negate: bool) -> bool:
        """``segments.<name>`` (``negate``: ``!segments.<name>``), bound by the caller: a
        bool decides or holds; unbound, not a map or no such key: CEL's to decide."""
        if not (
            isinstance(n, Select)
            and isinstance(n.operand, Ident)
            and n.operand.name == "segments"
            and "segments" in self.compiler.roots
        ):
            return False
        self.inline += 1
        self.emit(depth, "v = fr.bound.get('segments')")
        self.emit(depth, f"v = v.get({constant(n.field)}, UNSET) if type(v) is dict else UNSET")
        deciding = not self.decides if negate else self.decides
        self.emit(depth, f"if v is {deciding}:")
        self.decided(depth + 1)
        self.emit(depth, f"if v is not {not deciding}:")
        non_bool = 2 if negate else self.non_bool  # ``!`` of a non-bool: undecided
        odd = "2" if non_bool == 2 else f"2 if v is UNSET else {non_bool}"
        self.emit(depth + 1, f"{self.bad} |= {odd}")
        return True

    def _in_strings(self, depth: int, n: Binary) -> bool:
        """``slot in ["a", "b"]``: a string tests membership; MISSING is CEL's error;
        anything else goes to the term's closure."""
        if not isinstance(n.right, ListOf) or not n.right.items:
            return False
        items = [i.value for i in n.right.items if isinstance(i, Literal) and type(i.value) is str]
        slot = self.compiler.slot(n.left, frozenset())
        if slot is None or len(items) != len(n.right.items):
            return False
        self.read(depth, slot)
        strings = "{" + ", ".join(constant(x) for x in items) + "}"
        self.guarded(depth, "type(v) is str", f"v in {strings}", [n])
        return True

    def _compare(self, depth: int, n: Binary, c: Any) -> bool:
        """``slot op number``, ``size(slot) op number``, ``slot ==/!= string|bool``."""
        compiler, op = self.compiler, _COMPARE[n.op]
        if _number(c):
            size = compiler.size_slot(n.left, frozenset())
            if size is not None:
                self.read(depth, size)
                self.emit(depth, "tv = type(v)")
                self.guarded(depth, "tv is list or tv is dict", f"len(v) {op} {constant(c)}", [n])
                return True
        slot = compiler.slot(n.left, frozenset())
        if slot is None:
            return False
        if _number(c):
            self.read(depth, slot)
            self.guarded(depth, _NUMBER, f"v {op} {constant(c)}", [n])
            return True
        if n.op not in _ORDER and type(c) is str:
            self.read(depth, slot)
            self.guarded(depth, "type(v) is str", f"v {op} {constant(c)}", [n])
            return True
        if n.op not in _ORDER and type(c) is bool:
            self.read(depth, slot)
            test = f"v is {constant(c)}" if n.op == "==" else f"v is not {constant(c)}"
            self.guarded(depth, "type(v) is bool", test, [n])
            return True
        return False

    def _key_in(self, depth: int, n: Node, negate: bool) -> bool:
        """``"key" in slot`` (``negate``: ``!("key" in slot)``): a list or a map tests the
        key; MISSING is CEL's error; anything else is CEL's to decide."""
        found = key_in(n)
        if found is None:
            return False
        key_value, operand = found
        slot = self.compiler.slot(operand, frozenset())
        if slot is None:
            return False
        self.inline += 1
        self.read(depth, slot)
        self.emit(depth, "tv = type(v)")
        self.emit(depth, "if tv is list or tv is dict:")
        key = constant(key_value)
        self.decide_if(depth + 1, f"{key} not in v" if negate else f"{key} in v")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{self.bad} |= 1 if v is MISSING else 2")
        return True

    def _not_slot(self, depth: int, n: Node) -> bool:
        """``!slot``: a bool negated; MISSING is CEL's error; anything else undecided."""
        slot = self.compiler.slot(n, frozenset()) if isinstance(n, Select | Ident) else None
        if slot is None:
            return False
        self.inline += 1
        self.read(depth, slot)
        self.emit(depth, f"if v is {not self.decides}:")  # !v decides
        self.decided(depth + 1)
        self.emit(depth, f"if v is not {self.decides}:")
        self.emit(depth + 1, f"{self.bad} |= 1 if v is MISSING else 2")
        return True

    def _has(self, depth: int, n: Node) -> bool:
        """``has(root.f)`` of a slot that is MISSING exactly where the key is absent; under a
        map the view hides whole (``Compiler.has_hidden``), CEL's error."""
        slot = self.compiler.has_slot(n, frozenset()) if isinstance(n, Select) else None
        if slot is None:
            return False
        self.inline += 1
        if isinstance(n, Select) and self.compiler.has_hidden(n, frozenset()):
            self.emit(depth, f"{self.bad} |= 1")
            return True
        self.read(depth, slot)
        self.decide_if(depth, "v is not MISSING")
        return True

    def _bare(self, depth: int, slot: tuple[int, Getter]) -> None:
        """A slot read as a term (``profile.known``): its bool, MISSING erred, else non-bool."""
        self.inline += 1
        self.read(depth, slot)
        self.emit(depth, f"if v is {self.decides}:")
        self.decided(depth + 1)
        self.emit(depth, f"if v is not {not self.decides}:")
        self.emit(depth + 1, f"{self.bad} |= 1 if v is MISSING else {self.non_bool}")

    # -- the rule
    def terms(self, depth: int, terms: list[Node]) -> None:
        """A chain's terms in the written order, two neighbours on one slot as a band."""
        k = 0
        while k < len(terms):
            if k + 1 < len(terms) and self.band(depth, terms[k], terms[k + 1]):
                k += 2
                continue
            self.term(depth, terms[k])
            k += 1

    def chain(self, terms: list[Node]) -> None:
        self.emit(0, "def _rule(fr):")
        self.emit(1, "values = fr.values")
        self.emit(1, "bad = 0")
        self.terms(1, terms)
        self.emit(1, "if not bad:")
        self.emit(2, "return _H")
        self.emit(1, "if bad == 1:")
        self.emit(2, "return _E")
        self.emit(1, "raise Undecided")


def generate(
    node: Node, roots: frozenset[str], slot_of: SlotOf, hidden: HiddenMaps | None = None
) -> Generated | None:
    """The generated function of a rule (``node``: its parsed tree, which the closures
    compile: ``compile_decider`` did not return None), or None when no term of it is of a
    kind the generator writes inline (the rule keeps its closures). ``slot_of`` and
    ``hidden`` as for ``compile_decider``: the same slots the closures read."""
    compiler = Compiler(roots, slot_of, hidden)
    if isinstance(node, Binary) and node.op in ("&&", "||"):
        decides = node.op == "||"
        terms = compiler.terms(node, node.op)
        lone = False
    else:
        decides, terms, lone = False, [node], True
    writer = _Writer(compiler, decides, lone)
    try:
        writer.chain(terms)
    except RuleError:  # a constant that is not a plain validated one: the closures'
        return None
    if not writer.inline:
        return None
    source = "\n".join(writer.lines) + "\n"
    outcomes = (RuleOutcome.TRUE, RuleOutcome.FALSE)
    decided, held = outcomes if decides else outcomes[::-1]
    namespace: dict[str, Any] = {
        "__builtins__": dict(_BUILTINS),
        "UNSET": UNSET,
        "MISSING": MISSING,
        "Erred": Erred,
        "Undecided": Undecided,
        "_D": decided,
        "_H": held,
        "_E": RuleOutcome.ERROR,
        **writer.names,
    }
    exec(compile(source, "<nextbest.rules.generated>", "exec"), namespace)
    decider: Callable[[Any], RuleOutcome] = namespace["_rule"]
    return Generated(source, decider)
