"""Rules in the CEL subset (``rules.parse``) as trees of Python closures, exact or undecided.

A closure computes what the CEL engine computes, on the same values, or raises ``Undecided``
when it meets anything it does not mirror exactly: a type it does not expect, a null, int
overflow, division by zero, a NaN, a non-ASCII ``size()``, a missing key or position... The caller
then runs that rule in the CEL engine, so every outcome (TRUE, FALSE or ERROR) is CEL's.
A read of a path the variables do not hold (a key the profile lacks, a feature a consent
view hides: ``MISSING``) is CEL's error for certain: it raises ``Erred``, which ``&&`` and
``||`` absorb where another term decides, and which makes the rule's outcome ERROR
otherwise, without CEL. Nothing is ``eval``'d: the closures are fixed Python functions
chosen by node kind.

What was checked against the ``common-expression-language`` package (and is mirrored):
``&&``/``||`` absorb an error or a non-bool on one side when the other side decides
(``1 && false`` is false, ``true || x.missing`` is true); ``==`` between different scalar
kinds (``1 == "a"``, ``true == 1``, ``null == 1``) is false, int against double compares
the values (``1 == 1.0``, ``1 < 2.0``); ``in`` a list uses that equality, ``in`` a map tests
string keys; ``/`` and ``%`` on ints truncate toward zero, overflow is an error;
``exists``/``all`` go in order and stop at the first deciding element (an error before it
is the result); over a map (its keys, in CEL's own order) the closures decide only where the
order cannot matter: every key gives a bool, or some err and none decides; ``m["k"]`` and ``l[0]``
read a key or position that is there, a string key a map lacks is CEL's error, anything
else is CEL's.

Values are read through ``Frame.values``: one slot per path (``interest.mortgage.count_14d``,
``products``), filled on first read by the getter the caller registered for it, so a value
is computed at most once per decision and only if a rule reaches it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from nextbest.rules.expression import RuleOutcome
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

__all__ = [
    "MISSING",
    "UNSET",
    "Closure",
    "Compiler",
    "Decider",
    "Erred",
    "Frame",
    "Getter",
    "HiddenMaps",
    "SlotOf",
    "Undecided",
    "compile_decider",
    "compile_node",
    "uncovered",
]


class Undecided(Exception):
    """A closure cannot decide exactly as CEL would: the rule runs in CEL."""


class Erred(Undecided):
    """CEL errs here, for certain: a read of a path the variables do not hold (MISSING: a
    key the profile lacks, or a feature a view hides), which CEL reads as an unbound name
    or a missing key. ``&&`` and ``||`` absorb it when another term decides, as CEL does;
    anything else it reaches errs with it, so the rule's outcome is ERROR. Code that does
    not catch it by name treats it as ``Undecided``: CEL then says the same."""


#: a slot not read yet
UNSET: Any = object()
#: a path the full rule variables do not hold (CEL fails on it)
MISSING: Any = object()

#: (profile, topics, now, context) -> one path's value, or MISSING
Getter = Callable[[Any, Any, float, Any], Any]


class Frame:
    """One decision's values: ``values[i]`` is slot ``i``'s value once read (UNSET before),
    ``bound`` the variables bound by name (``segments``), ``local`` macro variables."""

    __slots__ = ("_getters", "args", "bound", "local", "values")

    def __init__(self, getters: Sequence[Getter], args: tuple[Any, Any, float, Any]) -> None:
        self._getters = getters
        #: (profile, topics, now, context): what the getters read
        self.args = args
        self.values: list[Any] = [UNSET] * len(getters)
        self.bound: dict[str, Any] = {}
        self.local: dict[str, Any] = {}

    def fill(self, i: int) -> Any:
        value = self.values[i] = self._getters[i](*self.args)
        return value


Closure = Callable[[Frame], Any]
#: a rule's root closure: the rule's outcome, or ``Undecided`` raised (the rule runs in CEL)
Decider = Callable[[Frame], RuleOutcome]
#: path -> (slot index, getter filling it)
SlotOf = Callable[[tuple[str, ...]], tuple[int, Getter]]
#: a map's path (``("profile", "funnel")``, ``("interest",)``) -> a view hides it whole
HiddenMaps = Callable[[tuple[str, ...]], bool]

_TRUE, _FALSE, _ERROR = RuleOutcome.TRUE, RuleOutcome.FALSE, RuleOutcome.ERROR
#: what an inner logic node returns (bools, ``Erred`` raised), and a rule's root (outcomes)
_BOOLS: tuple[Any, Any, Any] = (True, False, None)
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_EXACT = 2**53  # ints this small convert to double exactly
_LOW = -_EXACT
_SCALARS = frozenset({type(None), bool, int, float, str})
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
#: the comparisons of a size with a number (a size is a small int: Python compares as CEL)
_SIZE_TESTS = {**_ORDER, "==": operator.eq, "!=": operator.ne}
_SLOT_HAS_ROOTS = frozenset({"interest", "offers", "profile", "traits", "context", "now"})
#: profile fields that are always maps: ``has(profile.funnel.x)`` asks the ``x`` slot
_SLOT_HAS_MAPS = frozenset({("profile", "funnel"), ("profile", "consent")})


# ------------------------------------------------------------------ value semantics


def _int(v: int) -> int:
    if _I64_MIN <= v <= _I64_MAX:
        return v
    raise Undecided


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Two values CEL orders as Python would: same kind, or int against double (exact)."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _int(a), _int(b)
        if ta is float:
            if a != a or b != b:
                raise Undecided  # NaN
            return a, b
        if ta is str or ta is bool:
            return a, b
        raise Undecided
    if ta is int and tb is float:
        if _LOW <= a <= _EXACT and b == b:
            return float(a), b
    elif ta is float and tb is int and _LOW <= b <= _EXACT and a == a:
        return a, float(b)
    raise Undecided


def equal(a: Any, b: Any) -> bool:
    """CEL's ``==`` on scalars; lists and maps are CEL's to compare."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is str or ta is bool or a is None:
            return bool(a == b)
        x, y = _pair(a, b)
        return bool(x == y)
    if ta in _SCALARS and tb in _SCALARS:
        if (ta is int or ta is float) and (tb is int or tb is float):
            x, y = _pair(a, b)
            return bool(x == y)
        if ta is int:
            _int(a)
        if tb is int:
            _int(b)
        return False  # different kinds are never equal
    raise Undecided


def _trunc_div(a: int, b: int) -> int:
    if b == 0 or (a == _I64_MIN and b == -1):
        raise Undecided
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def _arith(op: str, a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is not tb:
        raise Undecided
    if ta is int:
        _int(a)
        _int(b)
        if op == "+":
            return _int(a + b)
        if op == "-":
            return _int(a - b)
        if op == "*":
            return _int(a * b)
        q = _trunc_div(a, b)
        return q if op == "/" else a - b * q
    if ta is float:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/" and b != 0.0:
            return a / b
        raise Undecided  # float % float is an error, x / 0.0 CEL's
    if ta is str and op == "+":
        return a + b
    raise Undecided


def _contains(x: Any, coll: Any) -> bool:
    tc = type(coll)
    if tc is list:
        if type(x) is str:  # a string equals only an equal string, in CEL as here
            return x in coll
        return any(equal(x, item) for item in coll)
    if tc is dict and type(x) is str:
        return x in coll
    raise Undecided


def _size(v: Any) -> int:
    t = type(v)
    if t is list or t is dict:
        return len(v)
    if t is str and v.isascii():  # CEL counts a string's bytes
        return len(v)
    raise Undecided


def _field(v: Any, name: str) -> Any:
    if type(v) is dict:
        try:
            return v[name]
        except KeyError:
            raise Undecided from None
    raise Undecided


def _item(v: Any, key: Any) -> Any:
    """``v[key]``: a map's value at a string key it holds, a list's item at a position it
    has; a string key a map lacks is CEL's error for certain (``Erred``, which ``&&`` and
    ``||`` absorb where another term decides); anything else (a position a list lacks, a
    number as a map key, which CEL may match across int and double) is CEL's to decide."""
    t = type(v)
    if t is dict and type(key) is str:
        try:
            return v[key]
        except KeyError:
            raise Erred from None
    if t is list and type(key) is int and 0 <= key < len(v):
        return v[key]
    raise Undecided


#: a term that erred (``Erred``): what ``&&`` and ``||`` absorb when another term decides
_ERRED: Any = object()
#: what a logic node returns when its terms decide, hold, or err (None: raise ``Erred``)
Results = tuple[Any, Any, Any]


def _combine(undecided: bool, erred: bool, held: Any, err: Any) -> Any:
    """A logic node's result when no term decided: ``held`` if every term held, else CEL's
    error (``err``, or ``Erred`` raised) if every other term held, else undecided."""
    if undecided:
        raise Undecided
    if not erred:
        return held
    if err is None:
        raise Erred
    return err


def _two_terms(first: Closure, second: Closure, decides: bool, results: Results) -> Closure:
    """``a && b`` (``decides`` False) or ``a || b`` (True): the general loop of
    ``_logic_terms`` unrolled for its commonest length; the same outcome."""
    holds = not decides
    decided, held, err = results

    def two(fr: Frame) -> Any:
        try:
            a = first(fr)
        except Erred:
            a = _ERRED
        except Undecided:
            a = UNSET
        if a is decides:
            return decided
        try:
            b = second(fr)  # undecided: so is the whole, ``a`` did not decide
        except Erred:
            b = _ERRED
        if b is decides:
            return decided
        if a is holds and b is holds:
            return held
        return _combine(
            not ((a is holds or a is _ERRED) and (b is holds or b is _ERRED)), True, held, err
        )

    return two


def _three_terms(
    first: Closure, second: Closure, third: Closure, decides: bool, results: Results
) -> Closure:
    """``a && b && c`` (or ``||``) in one closure: ``_logic_terms``' loop unrolled."""
    holds = not decides
    decided, held, err = results

    def three(fr: Frame) -> Any:
        try:
            a = first(fr)
        except Erred:
            a = _ERRED
        except Undecided:
            a = UNSET
        if a is decides:
            return decided
        try:
            b = second(fr)
        except Erred:
            b = _ERRED
        except Undecided:
            b = UNSET
        if b is decides:
            return decided
        try:
            c = third(fr)  # undecided: so is the whole, ``a`` and ``b`` did not decide
        except Erred:
            c = _ERRED
        if c is decides:
            return decided
        if a is holds and b is holds and c is holds:
            return held
        return _combine(
            not (
                (a is holds or a is _ERRED)
                and (b is holds or b is _ERRED)
                and (c is holds or c is _ERRED)
            ),
            True,
            held,
            err,
        )

    return three


#: a chain's first term, a slot compared with a constant, tested inline (``_headed``):
#: (slot, getter, True for a number and False for a string, the comparison, the constant)
_Head = tuple[int, Getter, bool, Callable[[Any, Any], bool], Any]


def _headed(
    head: _Head, first: Closure, rest: Closure | None, decides: bool, results: Results
) -> Closure:
    """``a && rest`` (``decides`` False) or ``a || rest`` (True), ``a`` a slot compared with
    a number or a string, tested inline (one call less for the term every chain runs):
    a small int or a float that is no NaN against a number, a string against a string,
    compare as in CEL; any other value goes to ``first``, ``a``'s closure. ``rest``: the
    other terms' closure (None: ``a`` alone is the rule). The outcome of ``_logic_terms``."""
    i, getter, number, test, c = head
    holds = not decides
    decided, held, err = results

    def lone(fr: Frame) -> Any:
        values = fr.values
        v = values[i]
        if v is UNSET:
            v = values[i] = getter(*fr.args)
        if number:
            if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
                return decided if test(v, c) is decides else held
        elif type(v) is str:
            return decided if test(v, c) is decides else held
        try:
            a = first(fr)  # undecided: so is the rule
        except Erred:
            return err
        if a is decides:
            return decided
        if a is holds:
            return held
        raise Undecided

    if rest is None:
        return lone

    def headed(fr: Frame) -> Any:
        values = fr.values
        v = values[i]
        if v is UNSET:
            v = values[i] = getter(*fr.args)
        if (
            number and ((type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v))
        ) or (not number and type(v) is str):
            a = test(v, c)
        else:
            try:
                a = first(fr)
            except Erred:
                a = _ERRED
            except Undecided:
                a = UNSET
        if a is decides:
            return decided
        try:
            b = rest(fr)  # undecided: so is the whole, ``a`` did not decide
        except Erred:
            b = _ERRED
        if b is decides:
            return decided
        if a is holds and b is holds:
            return held
        return _combine(
            not ((a is holds or a is _ERRED) and (b is holds or b is _ERRED)), True, held, err
        )

    return headed


def _logic_terms(terms: Sequence[Closure], decides: bool, results: Results) -> Closure:
    """The terms of ``&&`` (``decides`` False) or ``||`` (True), in the written order.

    CEL's ``&&`` and ``||`` are commutative: a deciding side (false for ``&&``, true for
    ``||``) decides whatever the others are, errors and non-bools included; when none
    decides, an error among terms that otherwise hold is the result (``Erred``), and a
    term the closures cannot decide leaves the whole undecided."""
    if len(terms) == 2:
        return _two_terms(terms[0], terms[1], decides, results)
    if len(terms) == 3:
        return _three_terms(terms[0], terms[1], terms[2], decides, results)
    holds = not decides
    decided, held, err = results

    def logic(fr: Frame) -> Any:
        undecided = erred = False
        for term in terms:
            try:
                v = term(fr)
            except Erred:
                erred = True
                continue
            except Undecided:
                undecided = True
                continue
            if v is decides:
                return decided
            if v is not holds:
                undecided = True
        return _combine(undecided, erred, held, err)

    return logic


def _order_slot(
    op: str, i: int, getter: Getter, c: int | float, exact: Callable[[Any], bool]
) -> Closure:
    """``root.a.b op c`` for a number ``c`` with ``|c| <= 2**53``, the commonest rule term,
    with the slot read and the comparison inline. A small int (the counts) or a float that
    is no NaN compares with ``c`` as CEL compares them (Python compares int and float
    exactly, and both convert to double exactly here); any other value goes to ``exact``,
    the general rule."""
    if op == ">=":

        def at_least(fr: Frame) -> bool:
            v = fr.values[i]
            if v is UNSET:
                v = fr.values[i] = getter(*fr.args)
            if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
                return v >= c
            return exact(v)

        return at_least
    if op == ">":

        def above(fr: Frame) -> bool:
            v = fr.values[i]
            if v is UNSET:
                v = fr.values[i] = getter(*fr.args)
            if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
                return v > c
            return exact(v)

        return above
    if op == "<":

        def below(fr: Frame) -> bool:
            v = fr.values[i]
            if v is UNSET:
                v = fr.values[i] = getter(*fr.args)
            if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
                return v < c
            return exact(v)

        return below

    def at_most(fr: Frame) -> bool:
        v = fr.values[i]
        if v is UNSET:
            v = fr.values[i] = getter(*fr.args)
        if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
            return v <= c
        return exact(v)

    return at_most


#: a slot compared with a number: (slot, its getter, the comparison, the number)
_Bound = tuple[int, Getter, Callable[[Any, Any], bool], int | float]


def _band(first: _Bound, second: _Bound, general: Closure, decides: bool) -> Closure:
    """Two comparisons of one slot with numbers under ``&&`` (``decides`` False) or ``||``:
    for a small int or a float that is no NaN (``_order_slot``'s fast case) both compare
    inline, anything else goes to ``general``, the two terms' closure."""
    i, getter, cmp1, c1 = first
    cmp2, c2 = second[2], second[3]
    if not decides:

        def both(fr: Frame) -> Any:
            v = fr.values[i]
            if v is UNSET:
                v = fr.values[i] = getter(*fr.args)
            if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
                return cmp1(v, c1) and cmp2(v, c2)
            return general(fr)

        return both

    def either(fr: Frame) -> Any:
        v = fr.values[i]
        if v is UNSET:
            v = fr.values[i] = getter(*fr.args)
        if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
            return cmp1(v, c1) or cmp2(v, c2)
        return general(fr)

    return either


def _equal_number_slot(want: bool, i: int, getter: Getter, c: int | float) -> Closure:
    """``root.a.b == c`` (``want``; False: ``!=``) for a number ``c`` with ``|c| <= 2**53``:
    a small int or a float that is no NaN equals ``c`` as in CEL (both convert to double
    exactly); anything else goes through ``equal``."""

    def equal_number_slot(fr: Frame) -> bool:
        values = fr.values
        v = values[i]
        if v is UNSET:
            v = values[i] = getter(*fr.args)
        if (type(v) is int and _LOW <= v <= _EXACT) or (type(v) is float and v == v):
            return (v == c) is want
        if v is MISSING:
            raise Erred
        return equal(v, c) is want

    return equal_number_slot


def _size_test(test: Callable[[Any, Any], bool], i: int, getter: Getter, c: int | float) -> Closure:
    """``size(root.a) op c`` for a number ``c`` with ``|c| <= 2**53``: a size is a small
    int, so ``test`` compares it with ``c`` as CEL does."""

    def size_test(fr: Frame) -> bool:
        values = fr.values
        v = values[i]
        if v is UNSET:
            v = values[i] = getter(*fr.args)
        t = type(v)
        if t is list or t is dict:
            return test(len(v), c)
        if v is MISSING:
            raise Erred
        return test(_size(v), c)

    return size_test


# ------------------------------------------------------------------ the compiler


def key_in(n: Node) -> tuple[str, Node] | None:
    """The key and the operand of ``"key" in <operand>`` with a string literal key, the
    membership test the closures and the generated code read inline; None for any other
    node."""
    if isinstance(n, Binary) and n.op == "in" and isinstance(n.left, Literal):
        key = n.left.value
        if type(key) is str:
            return key, n.right
    return None


class Compiler:
    """AST -> closure; ``slot_of(path)`` gives the slot holding a root path's value and
    the getter that fills it. ``node``, ``slot``, ``slot_bound``, ``size_slot``,
    ``has_slot`` and ``terms`` are what ``rules.generated`` builds its source from."""

    def __init__(
        self, roots: frozenset[str], slot_of: SlotOf, hidden: HiddenMaps | None = None
    ) -> None:
        self.roots = roots
        self.slot_of = slot_of
        #: a view's hidden maps (``has_hidden``); None: nothing hidden (the plain plan)
        self.hidden = hidden

    # -- paths
    def _path(self, node: Node, scope: frozenset[str]) -> tuple[str, ...] | None:
        """``root.a.b`` as a path, when ``root`` is a rule root not hidden by a macro."""
        names: list[str] = []
        while isinstance(node, Select):
            names.append(node.field)
            node = node.operand
        if isinstance(node, Ident) and node.name in self.roots and node.name not in scope:
            return (node.name, *reversed(names))
        return None

    def _read(self, path: tuple[str, ...]) -> Closure:
        if path[0] == "segments":  # bound by the caller after the segment rules ran
            rest = path[1:]

            def bound(fr: Frame) -> Any:
                v = fr.bound.get("segments", MISSING)
                if v is MISSING:
                    raise Undecided
                for name in rest:
                    v = _field(v, name)
                return v

            return bound
        i, getter = self.slot_of(path)

        def read(fr: Frame) -> Any:
            values = fr.values
            v = values[i]
            if v is UNSET:
                v = values[i] = getter(*fr.args)
            if v is MISSING:
                raise Erred
            return v

        return read

    def slot(self, n: Node, scope: frozenset[str]) -> tuple[int, Getter] | None:
        """The slot of ``n`` when it reads a root path (not ``segments``) straight."""
        path = self._path(n, scope) if isinstance(n, Select | Ident) else None
        if path is None or path[0] == "segments":
            return None
        return self.slot_of(path)

    # -- nodes
    def node(self, n: Node, scope: frozenset[str]) -> Closure:
        if isinstance(n, Literal):
            value = n.value
            return lambda fr: value
        if isinstance(n, ListOf):
            if all(isinstance(item, Literal) for item in n.items):
                values = [item.value for item in n.items if isinstance(item, Literal)]
                return lambda fr: list(values)
            items = [self.node(item, scope) for item in n.items]
            return lambda fr: [f(fr) for f in items]
        if isinstance(n, Ident):
            if n.name in scope:
                name = n.name

                def local(fr: Frame) -> Any:
                    return fr.local[name]

                return local
            if n.name in self.roots:
                return self._read((n.name,))
            raise _NotCompiled(n.name)
        if isinstance(n, Select):
            path = self._path(n, scope)
            if path is not None:
                return self._read(path)
            operand, name = self.node(n.operand, scope), n.field
            return lambda fr: _field(operand(fr), name)
        if isinstance(n, Unary):
            return self._unary(n, scope)
        if isinstance(n, Binary):
            return self._binary(n, scope)
        if isinstance(n, Cond):
            return self._cond(n, scope)
        if isinstance(n, Index):
            operand, index = self.node(n.operand, scope), self.node(n.index, scope)
            return lambda fr: _item(operand(fr), index(fr))
        return self._call(n, scope)

    def _unary(self, n: Unary, scope: frozenset[str]) -> Closure:
        if n.op == "!":
            fused = self._key_in_slot(n.operand, scope, negate=True)
            if fused is not None:
                return fused
        operand = self.node(n.operand, scope)
        if n.op == "!":

            def not_(fr: Frame) -> bool:
                v = operand(fr)
                if v is True:
                    return False
                if v is False:
                    return True
                raise Undecided

            return not_

        def neg(fr: Frame) -> Any:
            v = operand(fr)
            t = type(v)
            if t is float:
                return -v
            if t is int and _I64_MIN < v <= _I64_MAX:
                return -v
            raise Undecided

        return neg

    def _cond(self, n: Cond, scope: frozenset[str]) -> Closure:
        test, then, other = (self.node(x, scope) for x in (n.test, n.then, n.other))

        def cond(fr: Frame) -> Any:
            c = test(fr)
            if c is True:
                return then(fr)
            if c is False:
                return other(fr)
            raise Undecided

        return cond

    def terms(self, n: Node, op: str) -> list[Node]:
        if isinstance(n, Binary) and n.op == op:
            return self.terms(n.left, op) + self.terms(n.right, op)
        return [n]

    def _logic(self, n: Binary, scope: frozenset[str], results: Results = _BOOLS) -> Closure:
        # terms run in the written order (ordering them by cost made more values computed on
        # the bench: the selective terms, often written first, are not the cheapest)
        decides = n.op == "||"
        nodes = self.terms(n, n.op)
        if results is _BOOLS:
            results = (decides, not decides, None)
        head = self._head(nodes[0], scope)
        if head is not None and not self._band_at(nodes, 0, scope):
            first = self.node(nodes[0], scope)
            rest_terms = self._fused_terms(nodes[1:], scope, decides)
            rest = (
                rest_terms[0]
                if len(rest_terms) == 1
                else _logic_terms(rest_terms, decides, (decides, not decides, None))
            )
            return _headed(head, first, rest, decides, results)
        return _logic_terms(self._fused_terms(nodes, scope, decides), decides, results)

    def _head(self, n: Node, scope: frozenset[str]) -> _Head | None:
        """``root.a.b op c`` for ``op`` an order, ``==`` or ``!=`` and a number ``c`` with
        ``|c| <= 2**53``, or ``==``/``!=`` and a string ``c``: ``_headed``'s first term."""
        if not (isinstance(n, Binary) and n.op in _SIZE_TESTS and isinstance(n.right, Literal)):
            return None
        c, tc = n.right.value, type(n.right.value)
        number = (tc is int or tc is float) and _LOW <= c <= _EXACT
        if not number and not (tc is str and n.op in ("==", "!=")):
            return None
        slot = self.slot(n.left, scope)
        return None if slot is None else (*slot, number, _SIZE_TESTS[n.op], c)

    def _band_at(self, nodes: list[Node], k: int, scope: frozenset[str]) -> bool:
        """Whether ``nodes[k]`` and ``nodes[k + 1]`` compare one slot with numbers (a band)."""
        if k + 1 >= len(nodes):
            return False
        first, second = self.slot_bound(nodes[k], scope), self.slot_bound(nodes[k + 1], scope)
        return first is not None and second is not None and first[0] == second[0]

    def _fused_terms(
        self, nodes: list[Node], scope: frozenset[str], decides: bool
    ) -> tuple[Closure, ...]:
        """The terms' closures, two neighbours comparing one slot with numbers (``profile.age
        >= 18 && profile.age < 26``, a band) fused into one closure that reads the slot once."""
        out: list[Closure] = []
        k = 0
        while k < len(nodes):
            first = self.slot_bound(nodes[k], scope)
            second = self.slot_bound(nodes[k + 1], scope) if k + 1 < len(nodes) else None
            if first is not None and second is not None and first[0] == second[0]:
                pair = (self.node(nodes[k], scope), self.node(nodes[k + 1], scope))
                general = _two_terms(*pair, decides, (decides, not decides, None))
                out.append(_band(first, second, general, decides))
                k += 2
            else:
                out.append(self.node(nodes[k], scope))
                k += 1
        return tuple(out)

    def slot_bound(self, n: Node, scope: frozenset[str]) -> _Bound | None:
        """``root.a.b op c`` for an order ``op`` and a number ``c`` with ``|c| <= 2**53``:
        (slot, getter, op, c)."""
        if not (isinstance(n, Binary) and n.op in _ORDER and isinstance(n.right, Literal)):
            return None
        c = n.right.value
        if type(c) not in (int, float) or not _LOW <= c <= _EXACT:
            return None
        slot = self.slot(n.left, scope)
        return None if slot is None else (*slot, _ORDER[n.op], c)

    def root(self, n: Node) -> Decider:
        """A rule's closure returning its outcome: a root ``&&``/``||`` returns it directly
        (one call less per rule), anything else through ``_decider``."""
        if isinstance(n, Binary) and n.op in ("&&", "||"):
            outcomes = (_TRUE, _FALSE) if n.op == "||" else (_FALSE, _TRUE)
            return self._logic(n, frozenset(), (*outcomes, _ERROR))
        head = self._head(n, frozenset())
        closure = self.node(n, frozenset())
        if head is not None:
            return _headed(head, closure, None, False, (_FALSE, _TRUE, _ERROR))
        return _decider(closure)

    def _binary(self, n: Binary, scope: frozenset[str]) -> Closure:
        op = n.op
        if op in ("&&", "||"):
            return self._logic(n, scope)
        if isinstance(n.right, Literal):
            fast = self._against_literal(op, n.left, scope, n.right.value)
            if fast is not None:
                return fast
        left = self.node(n.left, scope)
        right = self.node(n.right, scope)
        if op in _ORDER:
            cmp = _ORDER[op]

            def order(fr: Frame) -> bool:
                a, b = _pair(left(fr), right(fr))
                return cmp(a, b)

            return order
        if op == "==":
            return lambda fr: equal(left(fr), right(fr))
        if op == "!=":
            return lambda fr: not equal(left(fr), right(fr))
        if op == "in":
            fused = self._key_in_slot(n, scope, negate=False)
            if fused is not None:
                return fused
            if isinstance(n.left, Literal) and type(n.left.value) is str:
                key = n.left.value

                def string_in(fr: Frame) -> bool:
                    coll = right(fr)
                    tc = type(coll)
                    if tc is list or tc is dict:
                        return key in coll
                    raise Undecided

                return string_in
            if isinstance(n.right, ListOf) and all(
                isinstance(i, Literal) and type(i.value) is str for i in n.right.items
            ):
                strings = frozenset(i.value for i in n.right.items if isinstance(i, Literal))

                def in_strings(fr: Frame) -> bool:
                    x = left(fr)
                    if type(x) is str:
                        return x in strings
                    if type(x) in _SCALARS:
                        return equal(x, "")  # false, or undecided for an odd int
                    raise Undecided

                return in_strings
            return lambda fr: _contains(left(fr), right(fr))
        return lambda fr: _arith(op, left(fr), right(fr))

    def _key_in_slot(self, n: Node, scope: frozenset[str], negate: bool) -> Closure | None:
        """``"key" in root.a`` (``negate``: ``!("key" in root.a)``) with the slot read inline:
        ``"mortgage" in products``, the commonest membership test."""
        found = key_in(n)
        if found is None:
            return None
        key, operand = found
        slot = self.slot(operand, scope)
        if slot is None:
            return None
        i, getter = slot
        holds = not negate

        def key_in_slot(fr: Frame) -> bool:
            values = fr.values
            coll = values[i]
            if coll is UNSET:
                coll = values[i] = getter(*fr.args)
            tc = type(coll)
            if tc is list or tc is dict:
                return (key in coll) is holds
            if coll is MISSING:
                raise Erred
            raise Undecided  # not a collection: CEL decides

        return key_in_slot

    def _against_literal(
        self, op: str, left_node: Node, scope: frozenset[str], c: Any
    ) -> Closure | None:
        """``x op literal``, the most common shape, without the general dispatch (and for
        ``root.a.b op literal`` with the slot read inline)."""
        tc = type(c)
        slot = self.slot(left_node, scope)
        if op in _SIZE_TESTS and (tc is int or tc is float) and _LOW <= c <= _EXACT:
            size_slot = self.size_slot(left_node, scope)
            if size_slot is not None:
                return _size_test(_SIZE_TESTS[op], *size_slot, c)
        if op in _ORDER and (tc is int or tc is float) and _LOW <= c <= _EXACT:
            cmp, cf = _ORDER[op], float(c)
            exact_int = tc is int

            def order_number(v: Any) -> bool:
                t = type(v)
                if t is int:
                    if exact_int and _I64_MIN <= v <= _I64_MAX:
                        return cmp(v, c)
                    if _LOW <= v <= _EXACT:
                        return cmp(float(v), cf)
                elif t is float and v == v:
                    return cmp(v, cf)
                if v is MISSING:
                    raise Erred
                raise Undecided

            if slot is not None:
                return _order_slot(op, *slot, c, order_number)
            left = self.node(left_node, scope)
            return lambda fr: order_number(left(fr))
        if op in ("==", "!=") and (tc is int or tc is float) and _LOW <= c <= _EXACT:
            if slot is not None:
                return _equal_number_slot(op == "==", *slot, c)
            return None
        if op in ("==", "!=") and tc is str:
            want = op == "=="
            if slot is not None:
                i, getter = slot

                def equal_string_slot(fr: Frame) -> bool:
                    values = fr.values
                    v = values[i]
                    if v is UNSET:
                        v = values[i] = getter(*fr.args)
                    if type(v) is str:
                        return (v == c) is want
                    if v is MISSING:
                        raise Erred
                    return equal(v, c) is want

                return equal_string_slot
            left = self.node(left_node, scope)

            def equal_string(fr: Frame) -> bool:
                v = left(fr)
                if type(v) is str:
                    return (v == c) is want
                return equal(v, c) is want

            return equal_string
        if op in ("==", "!=") and tc is bool:
            want = op == "=="
            left = self.node(left_node, scope)

            def equal_bool(fr: Frame) -> bool:
                v = left(fr)
                if type(v) is bool:
                    return (v is c) is want
                return equal(v, c) is want

            return equal_bool
        return None

    def size_slot(self, n: Node, scope: frozenset[str]) -> tuple[int, Getter] | None:
        """The slot of ``x`` when ``n`` is ``size(x)`` or ``x.size()`` of a root path."""
        if not isinstance(n, Call):
            return None
        if n.target is None and n.name == "size" and len(n.args) == 1:
            return self.slot(n.args[0], scope)
        if n.target is not None and n.name == "size" and not n.args:
            return self.slot(n.target, scope)
        return None

    def _call(self, n: Call, scope: frozenset[str]) -> Closure:
        name, target, args = n.name, n.target, n.args
        if target is None:
            if name == "has" and len(args) == 1 and isinstance(args[0], Select):
                return self._has(args[0], scope)
            if name == "size" and len(args) == 1:
                arg = self.node(args[0], scope)
                return lambda fr: _size(arg(fr))
            raise _NotCompiled(f"{name}()")
        if name in ("exists", "all") and len(args) == 2 and isinstance(args[0], Ident):
            return self._macro(name, target, args[0].name, args[1], scope)
        receiver = self.node(target, scope)
        if name == "size" and not args:
            return lambda fr: _size(receiver(fr))
        if name in ("startsWith", "endsWith", "contains") and len(args) == 1:
            arg = self.node(args[0], scope)
            method = {"startsWith": str.startswith, "endsWith": str.endswith}.get(
                name, str.__contains__
            )

            def string_test(fr: Frame) -> bool:
                s, x = receiver(fr), arg(fr)
                if type(s) is str and type(x) is str:
                    return method(s, x)
                raise Undecided

            return string_test
        raise _NotCompiled(f".{name}()")

    def has_slot(self, sel: Select, scope: frozenset[str]) -> tuple[int, Getter] | None:
        """The slot ``has(sel)`` asks, when it is MISSING exactly where the full variables
        lack the key (``has(profile.funnel.x)``, ``has(context.channel)``); else None."""
        path = self._path(sel, scope)
        if path is not None and (
            (len(path) == 2 and path[0] in _SLOT_HAS_ROOTS)
            or (len(path) == 3 and path[:2] in _SLOT_HAS_MAPS)
        ):
            return self.slot_of(path)
        return None

    def has_hidden(self, sel: Select, scope: frozenset[str]) -> bool:
        """``has(sel)`` asks a slot (``has_slot``) under a map the view hides whole
        (``has(profile.funnel.x)`` without ``profile.funnel``, ``has(interest.x)`` without
        ``interest``): CEL errs there, for certain, where the slot alone would say false."""
        hidden = self.hidden
        if hidden is None or self.has_slot(sel, scope) is None:
            return False
        path = self._path(sel, scope)
        return path is not None and hidden(path[:-1])

    def _has(self, sel: Select, scope: frozenset[str]) -> Closure:
        if self.has_hidden(sel, scope):

            def has_hidden(fr: Frame) -> bool:
                raise Erred

            return has_hidden
        slot = self.has_slot(sel, scope)
        if slot is not None:
            i, getter = slot

            def has_slot(fr: Frame) -> bool:
                values = fr.values
                v = values[i]
                if v is UNSET:
                    v = values[i] = getter(*fr.args)
                return v is not MISSING

            return has_slot
        operand, name = self.node(sel.operand, scope), sel.field

        def has(fr: Frame) -> bool:
            v = operand(fr)
            if type(v) is dict:
                return name in v
            raise Undecided

        return has

    def _macro(
        self, kind: str, target: Node, var: str, body: Node, scope: frozenset[str]
    ) -> Closure:
        items = self.node(target, scope)
        test = self.node(body, scope | {var})
        stop = kind == "exists"  # the element value that decides: true for exists
        stopped: bool = stop

        def in_order(fr: Frame, seq: list[Any], local: dict[str, Any]) -> bool:
            for item in seq:
                local[var] = item
                v = test(fr)
                if v is stop:
                    return stopped
                if v is not (not stop):
                    raise Undecided
            return not stop

        def over_keys(fr: Frame, seq: dict[Any, Any], local: dict[str, Any]) -> bool:
            """Over a map's keys: CEL's order is its own, and it stops at the first element
            that decides, an error before it being the result. So every key is tested: when
            each gives a bool the outcome is the same in any order, and so it is when some
            err for certain (``Erred``) and none decides (CEL's error); an error beside a key
            that decides, or a non-bool anywhere, is CEL's to decide."""
            found = erred = False
            for key in seq:
                if type(key) is not str:
                    raise Undecided
                local[var] = key
                try:
                    v = test(fr)
                except Erred:
                    erred = True
                    continue
                except Undecided:
                    raise Undecided from None
                if v is stop:
                    found = True
                elif v is not (not stop):
                    raise Undecided
            if found:
                if erred:  # which comes first is CEL's key order
                    raise Undecided
                return stopped
            if erred:
                raise Erred
            return not stop

        def macro(fr: Frame) -> bool:
            seq = items(fr)
            seq_type = type(seq)
            if seq_type is not list and seq_type is not dict:
                raise Undecided
            local = fr.local
            saved = local.get(var, MISSING)
            try:
                if seq_type is list:
                    return in_order(fr, seq, local)
                return over_keys(fr, seq, local)
            finally:
                if saved is MISSING:
                    local.pop(var, None)
                else:
                    local[var] = saved

        return macro


def _decider(closure: Closure) -> Decider:
    """``closure``'s value as a rule outcome: a non-bool is ERROR in CEL, and so is an error."""

    def decide(fr: Frame) -> RuleOutcome:
        try:
            v = closure(fr)
        except Erred:
            return _ERROR
        if v is True:
            return _TRUE
        if v is False:
            return _FALSE
        return _ERROR

    return decide


class _NotCompiled(Exception):
    """A name or function the closures do not cover: the rule stays CEL's."""


def compile_node(
    node: Node, roots: frozenset[str], slot_of: SlotOf, hidden: HiddenMaps | None = None
) -> Closure | None:
    """The closure for ``node`` (a parsed rule), or None when it uses something the closures
    do not cover. ``roots``: the names that are rule variables; ``slot_of(path)``: the frame
    slot holding the value at ``path`` and its getter (registered by the caller: the frame's
    getter ``i`` must be that one); ``hidden``: the maps a view hides whole, for a view's
    plan (``has()`` under one of them errs, as in CEL)."""
    try:
        return Compiler(roots, slot_of, hidden).node(node, frozenset())
    except _NotCompiled:
        return None


def uncovered(node: Node, roots: frozenset[str]) -> str | None:
    """The function, method or name that keeps the closures from ``node`` (a parsed rule),
    as a rule shows it (``int()``, ``.matches()``), or None when they cover it."""

    def no_slot(path: tuple[str, ...]) -> tuple[int, Getter]:
        return 0, _no_getter

    try:
        Compiler(roots, no_slot).node(node, frozenset())
    except _NotCompiled as exc:
        return str(exc)
    return None


def _no_getter(*args: Any) -> Any:
    return MISSING


def compile_decider(
    node: Node, roots: frozenset[str], slot_of: SlotOf, hidden: HiddenMaps | None = None
) -> Decider | None:
    """The rule's decider (its outcome, or ``Undecided`` raised), or None when the closures
    do not cover the rule; arguments as for ``compile_node``."""
    try:
        return Compiler(roots, slot_of, hidden).root(node)
    except _NotCompiled:
        return None
