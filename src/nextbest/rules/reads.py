"""What compiled rules read, down to the field, and the narrow variables that hold exactly that.

Converting rule variables to CEL costs more than evaluating the rules (each value, map and
key crosses the Python/Rust boundary one by one; a map and its keys cost several numbers
each), so a decision builds only the values its rules name. The catalog computes a
``RuleReads`` once from its rules' sources; per decision ``RuleReads.evaluation`` builds, for
each path the rules name (``interest.mortgage.count_14d``, ``offers.card.impressions_7d``,
``profile.age``), exactly that value, as one flat CEL variable the rule is rewritten to read
(``_nb3 >= 5``), and a root used as a whole (``size(interest)``, ``"x" in products``,
``has(profile.age)``) as a map narrowed to what the rules read.

Every path a rule reads holds the value the full ``rule_variables`` holds there, or is absent
where that is (CEL then fails on an unbound name where it failed on a missing key), so every
rule has the same outcome (TRUE, FALSE or ERROR), ``has()``, ``in`` and macros included.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import cel

from nextbest.profile.banking import BANKING_DEFAULTS, BANKING_FEATURES, Banking
from nextbest.profile.baseline import SessionWatch
from nextbest.profile.interest import decayed, trend_of
from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.profile.topics import TopicSpec
from nextbest.profile.windows import DAY, WINDOW_DAYS, count_in_days
from nextbest.rules.compiled import (
    MISSING,
    Closure,
    Decider,
    Getter,
    SlotOf,
    compile_decider,
    compile_node,
    uncovered,
)
from nextbest.rules.context import (
    RULE_ROOTS,
    age_of,
    engagement_of,
    interest_view,
    lifecycle_of,
    offer_view,
    security_view,
)
from nextbest.rules.evaluation import Evaluation, Fallback, LazyEvaluation, RulePlan
from nextbest.rules.expression import Rule
from nextbest.rules.generated import generate
from nextbest.rules.parse import Node, parse, parsed

__all__ = [
    "INTEREST_FIELDS",
    "OFFER_FIELDS",
    "PROFILE_FIELDS",
    "REASON_FIELDS",
    "SECURITY_FIELDS",
    "TRANSACTIONAL_FIELDS",
    "Need",
    "RuleReads",
    "SourcesOf",
    "needs_of",
    "paths_read",
]

#: what a path needs below it: field name -> deeper need, or None for the whole value
Need = dict[str, "Need"] | None

_EMPTY = TopicInterest()
_NO_HISTORY = OfferHistory()

# ------------------------------------------------------------------ reading a rule's source

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
        |[bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
        |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>.)
    """,
    re.VERBOSE,
)
#: tokens after which a ``.`` selects a field (a value ends there)
_VALUE_END = frozenset({"ident", "string", "number", ")", "]", "}"})


class _Token(NamedTuple):
    kind: str  # ident, string, number or the punctuation itself
    text: str
    start: int
    end: int


def _tokens(source: str) -> list[_Token] | None:
    """The source's tokens (strings, raw or not, single or triple quoted, and ``//``
    comments skipped as CEL lexes them), or None when it holds something this reader does
    not know: the caller then reads every root whole."""
    out: list[_Token] = []
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "space":
            continue
        if kind == "punct":
            if text in "\"'":
                return None  # an unterminated string
            kind = text
        out.append(_Token(kind, text, m.start(), m.end()))
    return out


class _Chain(NamedTuple):
    """``root.f1.f2``: the token index of the root, the path, and whether it is the
    argument of ``has()``, which tests its last field's presence."""

    at: int
    path: tuple[str, ...]
    in_has: bool


def _chains(tokens: list[_Token], roots: frozenset[str]) -> list[_Chain]:
    """Each root name in the rule with the plain ``.field`` selections that follow it; a
    chain stops at a method call (``x.exists(...)``, ``x.size()``), an index, an operator
    or the end, and is read whole from there."""
    out: list[_Chain] = []
    n = len(tokens)
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text not in roots:
            continue
        # a field selection (``x.interest``) is no root; a leading dot (``.interest``) is
        if i > 1 and tokens[i - 1].kind == "." and tokens[i - 2].kind in _VALUE_END:
            continue
        path = [tok.text]
        j = i + 1
        while (
            j + 1 < n
            and tokens[j].kind == "."
            and tokens[j + 1].kind == "ident"
            and not (j + 2 < n and tokens[j + 2].kind == "(")
        ):
            path.append(tokens[j + 1].text)
            j += 2
        in_has = (
            i > 1
            and tokens[i - 1].kind == "("
            and tokens[i - 2].text == "has"
            and tokens[i - 2].kind == "ident"
            and not (i > 2 and tokens[i - 3].kind == ".")
            and j < n
            and tokens[j].kind == ")"
        )
        out.append(_Chain(i, tuple(path), in_has))
    return out


def _merge(into: dict[str, Need], path: tuple[str, ...]) -> None:
    """Add ``path`` (read whole at its end) to a need tree; a whole value absorbs the rest."""
    node: dict[str, Need] = into
    for i, name in enumerate(path):
        last = i == len(path) - 1
        if name in node and node[name] is None:
            return  # already whole
        if last:
            node[name] = None
            return
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        node = child


def needs_of(source: str, roots: Iterable[str] = RULE_ROOTS) -> dict[str, Need]:
    """The paths ``source`` reads, as a tree per root.

    A chain ``root.a.b`` narrows to its fields; it stops (and is read whole from there) at
    anything other than a plain ``.field``: a method call (``products.exists(...)``,
    ``x.size()``), an index (``interest["x"]``), an operator or the end of the rule.
    A source this reader cannot tokenise reads every root whole."""
    known = frozenset(roots)
    tokens = _tokens(source)
    if tokens is None:
        return dict.fromkeys(sorted(known))
    needs: dict[str, Need] = {}
    for chain in _chains(tokens, known):
        _merge(needs, chain.path)
    return needs


#: flat variables are named ``_nb<n>``; a rule whose own names could clash is not rewritten
_FLAT = "_nb"
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def runs_in_cel(source: str, roots: frozenset[str] = RULE_ROOTS) -> str | None:
    """What keeps the closures from deciding ``source`` at all, so that it runs in the CEL
    engine at every decision that reaches it (``int()``, ``.matches()``, a map literal's
    ``{``), or None when they decide it (save for odd values, ``rules.compiled``)."""
    tree = parsed(source)
    if isinstance(tree, str):
        return tree
    return uncovered(tree, roots)


def _bound_names(tokens: list[_Token]) -> set[str]:
    """Names a macro binds (``x`` in ``list.exists(x, ...)``, ``k, v`` in two-variable
    forms): inside the macro they hide a root of the same name."""
    out: set[str] = set()
    for i in range(3, len(tokens)):
        if (
            tokens[i - 3].kind == "."
            and tokens[i - 2].text in _MACROS
            and tokens[i - 1].kind == "("
            and tokens[i].kind == "ident"
        ):
            j = i
            while j + 1 < len(tokens) and tokens[j].kind == "ident" and tokens[j + 1].kind == ",":
                out.add(tokens[j].text)
                j += 2
    return out


class _Plan(NamedTuple):
    """How one rule reads: its source with flattened chains (None: as written), the
    chains read as flat variables, and what it reads from the nested roots."""

    source: str | None
    flat: tuple[tuple[str, ...], ...]
    nested: dict[str, Need]


def _plan(source: str, name_of: Callable[[tuple[str, ...]], str]) -> _Plan:
    """Rewrite each ``root.a.b`` (``root.a`` under ``has()``) to one flat variable, so a
    decision converts one value instead of a map per level; ``segments`` (bound by the
    caller) and bare roots stay as they are."""
    tokens = _tokens(source)
    if tokens is None:
        return _Plan(None, (), dict.fromkeys(sorted(RULE_ROOTS)))
    chains = _chains(tokens, RULE_ROOTS)
    bound = _bound_names(tokens)
    idents = {t.text for t in tokens if t.kind == "ident"}
    nested: dict[str, Need] = {}
    if bound & RULE_ROOTS or any(name.startswith(_FLAT) for name in idents):
        for chain in chains:
            _merge(nested, chain.path)
        return _Plan(None, (), nested)
    flat: list[tuple[str, ...]] = []
    pieces: list[str] = []
    done = 0
    for chain in chains:
        keep = len(chain.path) - 1 if chain.in_has else len(chain.path)
        leading_dot = chain.at > 0 and tokens[chain.at - 1].kind == "."
        if chain.path[0] == "segments" or keep < 2 or leading_dot:
            _merge(nested, chain.path)
            continue
        path = chain.path[:keep]
        flat.append(path)
        start = tokens[chain.at].start
        end = tokens[chain.at + 2 * (keep - 1)].end
        pieces.append(source[done:start])
        pieces.append(name_of(path))
        done = end
    if not flat:
        return _Plan(None, (), nested)
    pieces.append(source[done:])
    return _Plan("".join(pieces), tuple(flat), nested)


# ------------------------------------------------------------------ one value per field


def _days_ago(when: float, now: float) -> float:
    return round(max(0.0, now - when) / DAY, 3)


def _window(days: int) -> Callable[[TopicInterest, TopicSpec, float], int]:
    span = days * DAY

    def count(it: TopicInterest, spec: TopicSpec, now: float) -> int:
        hits = it.hits  # count_in_days(hits, days, now), inline: it is the common field
        return bisect_right(hits, now) - bisect_right(hits, now - span) if hits else 0

    return count


#: (last 7 days, the 7 before) -> trend_of(...).value, filled on first use: an enum's
#: ``.value`` costs more than the counts
_TREND_VALUES: dict[tuple[int, int], str] = {}


def _trend(
    it: TopicInterest, spec: TopicSpec, now: float, counts: tuple[int, int] | None = None
) -> str:
    """``trend_of`` the last 7 days against the 7 before (``counts`` when the caller has
    them already)."""
    if counts is not None:
        pass
    elif not it.hits:
        counts = (0, 0)
    else:  # count_in_days(hits, 7, now), count_between(hits, now - 14 days, now - 7 days)
        hits = it.hits
        week_ago = bisect_right(hits, now - 7 * DAY)
        counts = (bisect_right(hits, now) - week_ago, week_ago - bisect_right(hits, now - 14 * DAY))
    value = _TREND_VALUES.get(counts)
    if value is None:
        value = trend_of(*counts).value
        if len(_TREND_VALUES) < 4096:
            _TREND_VALUES[counts] = value
    return value


#: each field of ``interest_view``, computed on its own
INTEREST_FIELDS: dict[str, Callable[[TopicInterest, TopicSpec, float], Any]] = {
    "score": lambda it, spec, now: round(decayed(it.score, it.score_at, now, spec.half_life), 6),
    **{f"count_{d}d": _window(d) for d in WINDOW_DAYS},
    "total": lambda it, spec, now: it.total,
    "first_seen_days": lambda it, spec, now: (
        _days_ago(it.first_seen, now) if it.total > 0 else -1.0
    ),
    "last_seen_days": lambda it, spec, now: _days_ago(it.last_seen, now) if it.total > 0 else -1.0,
    "trend": _trend,
}

#: each field of ``offer_view``, computed on its own
OFFER_FIELDS: dict[str, Callable[[OfferHistory, float], Any]] = {
    "impressions_7d": lambda h, now: count_in_days(h.impressions, 7, now),
    "impressions_30d": lambda h, now: count_in_days(h.impressions, 30, now),
    "clicks_30d": lambda h, now: count_in_days(h.clicks, 30, now),
    "dismissals_30d": lambda h, now: count_in_days(h.dismissals, 30, now),
    "total_impressions": lambda h, now: h.total_impressions,
    "total_clicks": lambda h, now: h.total_clicks,
}


def _age(p: Profile, now: float) -> int:
    age = age_of(p.traits, now)
    return age if age is not None else -1


#: each field of ``rule_variables(...)["profile"]``, computed on its own
PROFILE_FIELDS: dict[str, Callable[[Profile, float], Any]] = {
    "customer_id": lambda p, now: p.customer_id,
    "known": lambda p, now: p.user_id is not None,
    "age": _age,
    "lifecycle": lambda p, now: lifecycle_of(age_of(p.traits, now)),
    "engagement": lambda p, now: engagement_of(
        bisect_right(p.activity, now) - bisect_right(p.activity, now - 30 * DAY)
    ),
    "overdrawn": lambda p, now: p.overdrawn,
    "balance": lambda p, now: p.balance if p.balance is not None else 0.0,
    "sessions": lambda p, now: p.sessions,
    "events": lambda p, now: p.event_count,
    "funnel": lambda p, now: {t: s.label for t, s in p.funnel.items()},
    "life_events": lambda p, now: [
        {"type": kind, "days_ago": _days_ago(when, now)} for when, kind in p.life_events
    ],
    "consent": lambda p, now: dict(p.consent),
}


def _banking_field(
    name: str, fn: Callable[[Banking, float], Any]
) -> Callable[[Profile, float], Any]:
    default = BANKING_DEFAULTS[name]

    def read(p: Profile, now: float) -> Any:
        b = p.banking
        return default if b is None else fn(b, now)

    return read


PROFILE_FIELDS.update({name: _banking_field(name, fn) for name, fn in BANKING_FEATURES.items()})

#: the ``profile`` fields folded from core-banking events alone (``Balance Updated``,
#: ``Transaction Posted``, ``Overdraft Started`` / ``Ended``): the transactional data source
TRANSACTIONAL_FIELDS: frozenset[str] = frozenset({"overdrawn", "balance", *BANKING_FEATURES})


def _live(p: Profile, now: float) -> SessionWatch | None:
    guard = p.guard
    return guard.live_session(now) if guard is not None else None


def _risk(p: Profile, now: float) -> float:
    s = _live(p, now)
    return s.risk if s is not None else 0.0


def _flagged(p: Profile, now: float) -> bool:
    s = _live(p, now)
    return s is not None and s.flagged


def _signals(p: Profile, now: float) -> list[str]:
    s = _live(p, now)
    return [x.value for x in s.signals] if s is not None else []


#: each field of ``security_view``, computed on its own
SECURITY_FIELDS: dict[str, Callable[[Profile, float], Any]] = {
    "risk": _risk,
    "flagged": _flagged,
    "signals": _signals,
}


def _narrow(value: Any, need: Need) -> Any:
    """The part of ``value`` that ``need`` names (a key absent stays absent)."""
    if need is None or not isinstance(value, dict):
        return value
    return {k: _narrow(value[k], sub) for k, sub in need.items() if k in value}


def _now_view(now: float) -> dict[str, Any]:
    moment = datetime.fromtimestamp(now, UTC)
    return {
        "epoch": now,
        "hour": moment.hour,
        "weekday": moment.isoweekday(),
        "day": moment.day,
        "month": moment.month,
        "year": moment.year,
    }


# ------------------------------------------------------------------ per-root builders

#: (profile, topics, now, context) -> one root's narrow value
_Build = Callable[[Profile, Mapping[str, TopicSpec], float, dict[str, Any]], Any]


def _interest_builder(need: Need) -> _Build:
    if need is None:

        def whole(
            p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]
        ) -> Any:
            return {
                tid: interest_view(p.interests.get(tid, _EMPTY), spec, now)
                for tid, spec in topics.items()
            }

        return whole
    plan = [
        (
            tid,
            None
            if fields is None
            else tuple((f, INTEREST_FIELDS[f]) for f in fields if f in INTEREST_FIELDS),
        )
        for tid, fields in need.items()
    ]

    def narrow(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]) -> Any:
        out: dict[str, Any] = {}
        interests = p.interests
        for tid, fields in plan:
            spec = topics.get(tid)
            if spec is None:
                continue
            it = interests.get(tid, _EMPTY)
            if fields is None:
                out[tid] = interest_view(it, spec, now)
            else:
                out[tid] = {f: fn(it, spec, now) for f, fn in fields}
        return out

    return narrow


def _offers_builder(need: Need, named: frozenset[str]) -> _Build:
    if need is None:

        def whole(
            p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]
        ) -> Any:
            out = {oid: offer_view(h, now) for oid, h in p.offers.items()}
            for oid in named:
                if oid not in out:
                    out[oid] = offer_view(_NO_HISTORY, now)
            return out

        return whole
    plan = [
        (
            oid,
            None
            if fields is None
            else tuple((f, OFFER_FIELDS[f]) for f in fields if f in OFFER_FIELDS),
        )
        for oid, fields in need.items()
    ]

    def narrow(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]) -> Any:
        out: dict[str, Any] = {}
        offers = p.offers
        for oid, fields in plan:
            h = offers.get(oid)
            if h is None:
                if oid not in named:
                    continue  # absent from the full view too
                h = _NO_HISTORY
            out[oid] = offer_view(h, now) if fields is None else {f: fn(h, now) for f, fn in fields}
        return out

    return narrow


def _profile_builder(need: Need) -> _Build:
    if need is None:

        def whole(
            p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]
        ) -> Any:
            return {f: fn(p, now) for f, fn in PROFILE_FIELDS.items()}

        return whole
    plan = [(f, PROFILE_FIELDS[f], sub) for f, sub in need.items() if f in PROFILE_FIELDS]

    def narrow(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: dict[str, Any]) -> Any:
        return {f: _narrow(fn(p, now), sub) for f, fn, sub in plan}

    return narrow


def _builder(root: str, need: Need, named: frozenset[str]) -> _Build:
    if root == "interest":
        return _interest_builder(need)
    if root == "offers":
        return _offers_builder(need, named)
    if root == "profile":
        return _profile_builder(need)
    if root == "products":
        return lambda p, topics, now, ctx: list(p.products)
    if root == "traits":
        return lambda p, topics, now, ctx: _narrow(p.traits, need)
    if root == "context":
        return lambda p, topics, now, ctx: _narrow(ctx, need)
    if root == "now":
        return lambda p, topics, now, ctx: _narrow(_now_view(now), need)
    if root == "security":
        return lambda p, topics, now, ctx: _narrow(security_view(p, now), need)
    raise ValueError(f"no builder for root {root!r}")


# ------------------------------------------------------------------ flat variables

_MISSING: Any = MISSING  # a path the full view does not hold: the variable stays unbound


def _resolve(value: Any, rest: tuple[str, ...]) -> Any:
    for key in rest:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _flat_builder(path: tuple[str, ...], named: frozenset[str]) -> _Build:
    """The value at ``path`` (at least ``root.field``), or _MISSING where the full view
    holds none (CEL then fails on an unbound name where it failed on a missing key)."""
    root, first, rest = path[0], path[1], path[2:]
    if root == "interest":
        fn = INTEREST_FIELDS.get(rest[0]) if len(rest) == 1 else None
        if len(rest) > 1 or (rest and fn is None):
            return lambda p, topics, now, ctx: _MISSING  # below a number or a missing field

        def topic(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            spec = topics.get(first)
            if spec is None:
                return _MISSING
            it = p.interests.get(first, _EMPTY)
            return interest_view(it, spec, now) if fn is None else fn(it, spec, now)

        return topic
    if root == "offers":
        ofn = OFFER_FIELDS.get(rest[0]) if len(rest) == 1 else None
        if len(rest) > 1 or (rest and ofn is None):
            return lambda p, topics, now, ctx: _MISSING

        def offer(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            h = p.offers.get(first)
            if h is None:
                if first not in named:
                    return _MISSING
                h = _NO_HISTORY
            return offer_view(h, now) if ofn is None else ofn(h, now)

        return offer
    if root == "profile":
        pfn = PROFILE_FIELDS.get(first)
        if pfn is None:
            return lambda p, topics, now, ctx: _MISSING
        if not rest:
            return lambda p, topics, now, ctx: pfn(p, now)
        return lambda p, topics, now, ctx: _resolve(pfn(p, now), rest)
    below = path[1:]
    if root == "traits":
        return lambda p, topics, now, ctx: _resolve(p.traits, below)
    if root == "context":
        return lambda p, topics, now, ctx: _resolve(ctx, below)
    if root == "now":
        return lambda p, topics, now, ctx: _resolve(_now_view(now), below)
    if root == "security":
        sfn = SECURITY_FIELDS.get(first)
        if sfn is None or rest:
            return lambda p, topics, now, ctx: _MISSING  # scalars and a list: no fields
        return lambda p, topics, now, ctx: sfn(p, now)
    return lambda p, topics, now, ctx: _MISSING  # products is a list: it has no fields


def _slot_getter(path: tuple[str, ...], named: frozenset[str]) -> Getter:
    """What fills a closure's slot for ``path``: the whole root, or the flat value (the most
    read fields in one function each: the same values as the field tables, fewer calls)."""
    if len(path) == 1:
        return _builder(path[0], None, named)
    if len(path) == 2 and path[0] == "profile" and path[1] in _PROFILE_SCALARS:
        return _PROFILE_SCALARS[path[1]]
    if len(path) == 2 and path[0] == "profile" and path[1] in _PROFILE_MAPS:
        return _PROFILE_MAPS[path[1]]
    if len(path) == 2 and path[0] in ("context", "traits"):
        return _map_key(path[0], path[1])
    if len(path) == 3:
        fast = _fast_getter(*path, named)
        if fast is not None:
            return fast
    return _flat_builder(path, named)


def _lifecycle(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> str:
    return lifecycle_of(age_of(p.traits, now))


def _engagement(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> str:
    activity = p.activity
    return engagement_of(bisect_right(activity, now) - bisect_right(activity, now - 30 * DAY))


#: ``profile.<field>`` for the scalar fields, read straight (PROFILE_FIELDS' values with one
#: call less per read)
_PROFILE_SCALARS: dict[str, Getter] = {
    "customer_id": lambda p, topics, now, ctx: p.customer_id,
    "known": lambda p, topics, now, ctx: p.user_id is not None,
    "age": lambda p, topics, now, ctx: -1 if (age := age_of(p.traits, now)) is None else age,
    "lifecycle": _lifecycle,
    "engagement": _engagement,
    "overdrawn": lambda p, topics, now, ctx: p.overdrawn,
    "balance": lambda p, topics, now, ctx: p.balance if p.balance is not None else 0.0,
    "sessions": lambda p, topics, now, ctx: p.sessions,
    "events": lambda p, topics, now, ctx: p.event_count,
    **{
        name: (lambda fn: lambda p, topics, now, ctx: fn(p, now))(PROFILE_FIELDS[name])
        for name in BANKING_FEATURES
    },
}


def _life_events(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
    events = p.life_events
    if not events:
        return []
    return [{"type": kind, "days_ago": _days_ago(when, now)} for when, kind in events]


def _funnel(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
    funnel = p.funnel
    return {t: _FUNNEL_LABEL[s] for t, s in funnel.items()} if funnel else {}


#: ``profile.<field>`` for the lists and maps, read straight (PROFILE_FIELDS' values)
_PROFILE_MAPS: dict[str, Getter] = {
    "funnel": _funnel,
    "life_events": _life_events,
    "consent": lambda p, topics, now, ctx: dict(p.consent),
}


def _map_key(root: str, key: str) -> Getter:
    """``context.<key>`` or ``traits.<key>``: ``_flat_builder``'s value, one call less."""
    if root == "context":

        def context_key(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            if type(ctx) is dict:
                return ctx.get(key, _MISSING)
            return _resolve(ctx, (key,))

        return context_key

    def trait(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
        traits = p.traits
        if type(traits) is dict:
            return traits.get(key, _MISSING)
        return _resolve(traits, (key,))

    return trait


#: the ``profile`` fields an offer's reason may show (``{profile.<field>}``): the scalars
REASON_FIELDS: frozenset[str] = frozenset(_PROFILE_SCALARS)

#: FunnelStage -> its label, without the enum's ``name`` lookup per read
_FUNNEL_LABEL = {stage: stage.label for stage in FunnelStage}


def _fast_getter(root: str, first: str, field: str, named: frozenset[str]) -> Getter | None:
    """``interest.<topic>.<count|score|trend>``, ``offers.<offer>.<count>``,
    ``profile.funnel.<topic>`` and ``profile.consent.<purpose>`` read straight from the
    profile; None for any other path."""
    if root == "interest" and field in _WINDOW_SPANS:
        span = _WINDOW_SPANS[field]

        def window(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            if first not in topics:
                return _MISSING
            it = p.interests.get(first)
            if it is None or not it.hits:
                return 0
            hits = it.hits
            return bisect_right(hits, now) - bisect_right(hits, now - span)

        return window
    if root == "interest" and field == "score":

        def score(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            spec = topics.get(first)
            if spec is None:
                return _MISSING
            it = p.interests.get(first)
            if it is None:
                return 0.0
            value, at = it.score, it.score_at
            if now <= at or value == 0.0:  # decayed(), inline (and TopicSpec.half_life)
                return round(value, 6)
            return round(value * 2.0 ** (-(now - at) / (spec.half_life_days * 86_400.0)), 6)

        return score
    if root == "interest" and field == "trend":

        def trend(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            if first not in topics:
                return _MISSING
            it = p.interests.get(first)
            if it is None or not it.hits:
                counts = (0, 0)
            else:  # _trend(), inline
                hits = it.hits
                week_ago = bisect_right(hits, now - 7 * DAY)
                counts = (
                    bisect_right(hits, now) - week_ago,
                    week_ago - bisect_right(hits, now - 14 * DAY),
                )
            value = _TREND_VALUES.get(counts)
            return value if value is not None else _trend(_EMPTY, topics[first], now, counts)

        return trend
    if root == "offers" and field in _OFFER_COUNTS:
        attribute, span = _OFFER_COUNTS[field]

        def offer_count(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            h = p.offers.get(first)
            if h is None:
                return 0 if first in named else _MISSING
            hits = getattr(h, attribute)
            return bisect_right(hits, now) - bisect_right(hits, now - span) if hits else 0

        return offer_count
    if root == "profile" and first == "consent":

        def consent(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            return p.consent.get(field, _MISSING)

        return consent
    if root == "profile" and first == "funnel":

        def funnel(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
            stage = p.funnel.get(field)
            return _MISSING if stage is None else _FUNNEL_LABEL[stage]

        return funnel
    return None


_WINDOW_SPANS = {f"count_{d}d": d * DAY for d in WINDOW_DAYS}
#: the offer history's windowed counts: (its hits list, the window)
_OFFER_COUNTS = {
    "impressions_7d": ("impressions", 7 * DAY),
    "impressions_30d": ("impressions", 30 * DAY),
    "clicks_30d": ("clicks", 30 * DAY),
    "dismissals_30d": ("dismissals", 30 * DAY),
}


# ------------------------------------------------------------------ the catalog's reads


class RuleReads:
    """The paths a set of rules reads (``needs``: a tree per root, for people and the
    catalog), and per decision an evaluation that computes those values only when a rule
    reaches them.

    Each rule in the common CEL subset (``rules.parse``) is also compiled, once, to Python
    closures (``rules.compiled``) that read one slot per path (``interest.mortgage.count_14d``)
    through the field tables, and decide exactly as CEL or not at all; ``&&`` and ``||``
    stop at the first deciding side, so most values are never computed. A rule the closures
    do not cover, or cannot decide for one decision, runs in CEL as phase one rewrote it:
    chains such as ``interest.mortgage.count_14d`` as one flat variable each (``_nb3``),
    roots read whole (``"x" in products``) or under ``has(root.f)`` as maps narrowed to what
    the rules read, in a ``cel.Context`` built on first need and holding only what the rules
    run there read. ``segments`` is the caller's to bind.

    ``named_offers``: offers named as ``offers.<id>``; rules see zeros for those never shown.
    """

    __slots__ = (
        "_builders",
        "_flat",
        "_has_maps",
        "_masked",
        "_nested",
        "_paths",
        "_programs",
        "_static",
        "compiled",
        "generated",
        "named_offers",
        "needs",
    )

    def __init__(
        self,
        needs: Mapping[str, Need],
        named_offers: Iterable[str] = (),
        nested: Mapping[str, Need] | None = None,
        flat: Mapping[tuple[str, ...], str] | None = None,
        programs: Mapping[Rule, Any] | None = None,
        closures: Mapping[Rule, tuple[Closure, Decider]] | None = None,
        slots: Sequence[tuple[str, ...]] = (),
        fallbacks: Mapping[Rule, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
        generated: Mapping[Rule, str] | None = None,
        has_maps: Mapping[Rule, tuple[Node, frozenset[tuple[str, ...]]]] | None = None,
    ) -> None:
        self.needs: dict[str, Need] = dict(needs)
        #: the rules whose decider is a generated function (``rules.generated``): its source
        self.generated: dict[Rule, str] = dict(generated or {})
        self.named_offers = frozenset(named_offers)
        nested = self.needs if nested is None else nested
        self._nested: dict[str, Need] = dict(nested)
        self._builders = tuple(
            (root, _builder(root, need, self.named_offers))
            for root, need in sorted(nested.items())
            if root != "segments"
        )
        flat = dict(flat or {})
        self._flat = tuple(
            (name, _flat_builder(path, self.named_offers)) for path, name in flat.items()
        )
        self._programs: dict[Rule, Any] = dict(programs or {})
        closures = dict(closures or {})
        #: the rules compiled to closures (the others always run in CEL): each closure
        #: gives the rule's value, or raises ``Undecided`` (``Erred``: CEL errs there)
        self.compiled: dict[Rule, Closure] = {rule: c for rule, (c, _) in closures.items()}
        deciders = {rule: d for rule, (_, d) in closures.items()}
        paths = list(slots)
        paths += [path for path in flat if path not in paths]
        slot = {path: i for i, path in enumerate(paths)}
        getters = tuple(_slot_getter(path, self.named_offers) for path in paths)
        self._paths: tuple[tuple[str, ...], ...] = tuple(paths)
        #: the plan of each set of hidden sources (``masked``)
        self._masked: dict[frozenset[str], RulePlan] = {}
        #: the compiled rules with a ``has()`` of a slot: their tree and the maps those
        #: slots are keys of (``("profile", "funnel")``, ``("interest",)``), compiled again
        #: for a view that hides one of the maps whole (``masked``)
        self._has_maps = dict(has_maps or {})
        flat_slot = {name: slot[path] for path, name in flat.items()}
        fallback: dict[Rule | None, Fallback] = {
            rule: (tuple((n, flat_slot[n]) for n in names), tuple(r for r in roots))
            for rule, (names, roots) in (fallbacks or {}).items()
        }
        # a rule the catalog did not compile sees every variable, as in phase one
        every_root = (*(root for root, _ in self._builders), "segments")
        fallback[None] = (tuple(flat_slot.items()), every_root)
        self._static = RulePlan(getters, deciders, self._programs, fallback, dict(self._builders))

    @classmethod
    def of(cls, rules: Iterable[Rule], generate_code: bool = True) -> RuleReads:
        """What ``rules`` read, from their sources, and the rules as closures (once, when the
        catalog compiles); with ``generate_code``, each rule's decider is a function
        generated from its syntax tree where ``rules.generated`` covers one of its terms
        (the same outcomes, fewer calls), else its closures'."""
        rules = list(rules)
        needs: dict[str, Need] = {}
        nested: dict[str, Need] = {}
        named: set[str] = set()
        names: dict[tuple[str, ...], str] = {}
        programs: dict[Rule, Any] = {}
        fallbacks: dict[Rule, tuple[tuple[str, ...], tuple[str, ...]]] = {}

        def name_of(path: tuple[str, ...]) -> str:
            return names.setdefault(path, f"{_FLAT}{len(names)}")

        for rule in rules:
            for root, need in needs_of(rule.source).items():
                _merge_tree(needs, root, need)
                if root == "offers" and need is not None:
                    named.update(need)
            plan = _plan(rule.source, name_of)
            for root, need in plan.nested.items():
                _merge_tree(nested, root, need)
            if plan.source is not None:
                programs[rule] = cel.compile(plan.source)
            fallbacks[rule] = (tuple(names[path] for path in plan.flat), tuple(plan.nested))
        slots: dict[tuple[str, ...], tuple[int, Getter]] = {}
        named_offers = frozenset(named)

        def slot_of(path: tuple[str, ...]) -> tuple[int, Getter]:
            slot = slots.get(path)
            if slot is None:
                slot = slots[path] = (len(slots), _slot_getter(path, named_offers))
            return slot

        closures: dict[Rule, tuple[Closure, Decider]] = {}
        sources: dict[Rule, str] = {}
        has_maps: dict[Rule, tuple[Node, frozenset[tuple[str, ...]]]] = {}
        for rule in rules:
            tree = parse(rule.source)
            maps: set[tuple[str, ...]] = set()

            def asked(path: tuple[str, ...], maps: set[tuple[str, ...]] = maps) -> bool:
                maps.add(path)  # the map a has() of a slot asks under; none hidden here
                return False

            closure = None if tree is None else compile_node(tree, RULE_ROOTS, slot_of, asked)
            if closure is None or tree is None:
                continue
            if maps:
                has_maps[rule] = (tree, frozenset(maps))
            made = generate(tree, RULE_ROOTS, slot_of) if generate_code else None
            if made is not None:
                closures[rule], sources[rule] = (closure, made.decider), made.source
                continue
            decider = compile_decider(tree, RULE_ROOTS, slot_of)
            assert decider is not None  # the closures cover the rule: its closure compiled
            closures[rule] = (closure, decider)
        return cls(
            needs,
            named,
            nested,
            names,
            programs,
            closures,
            list(slots),
            fallbacks,
            sources,
            has_maps,
        )

    @property
    def roots(self) -> frozenset[str]:
        return frozenset(self.needs)

    @property
    def programs(self) -> dict[Rule, Any]:
        """The rewritten rules, compiled for CEL (what a rule falls back to)."""
        return self._programs

    def topics_in(self, topics: Mapping[str, TopicSpec]) -> list[str]:
        """The catalog topics whose interest a rule reads (all of them if one reads the root
        ``interest`` whole)."""
        if "interest" not in self.needs:
            return []
        need = self.needs["interest"]
        if need is None:
            return list(topics)
        return sorted(t for t in need if t in topics)

    def variables(
        self,
        profile: Profile,
        topics: Mapping[str, TopicSpec],
        now: float,
        context: dict[str, Any],
    ) -> dict[str, Any]:
        """Every CEL variable the rewritten rules may read for ``profile`` at ``now``: the
        narrowed roots and the flat variables (what phase one built per decision)."""
        out = {root: build(profile, topics, now, context) for root, build in self._builders}
        for name, build in self._flat:
            value = build(profile, topics, now, context)
            if value is not _MISSING:
                out[name] = value
        return out

    def cel_evaluation(
        self,
        profile: Profile,
        topics: Mapping[str, TopicSpec],
        now: float,
        context: dict[str, Any],
    ) -> Evaluation:
        """Every rule in CEL over every variable, converted up front (phase one's path)."""
        return Evaluation(self.variables(profile, topics, now, context), self._programs)

    def evaluation(
        self,
        profile: Profile,
        topics: Mapping[str, TopicSpec],
        now: float,
        context: dict[str, Any],
        plan: RulePlan | None = None,
    ) -> LazyEvaluation:
        """One decision's evaluation: ``check(rule)`` runs the rule's closures, or CEL;
        ``plan``: a view's (``masked``), else every path as the profile holds it."""
        return LazyEvaluation(plan or self._static, (profile, topics, now, context))

    @property
    def plan(self) -> RulePlan:
        """The plan that reads every path as the profile holds it."""
        return self._static

    def masked(self, hidden: frozenset[str], sources_of: SourcesOf) -> RulePlan:
        """The plan of a view that may not read the sources ``hidden``: every path whose
        sources (``sources_of``, the catalog's ``FeatureSources.of_path``) meet ``hidden``
        reads as absent (MISSING: CEL's error, as for a key the profile lacks, which the
        closures answer themselves: ``&&`` and ``||`` absorb it where another term
        decides, ``has()`` is false; in CEL the variable is unbound or the key missing),
        and a map read whole (``traits``, ``profile``) loses those keys. A ``has()`` of a
        key of a map the view hides whole (``has(profile.funnel.x)`` without
        ``profile.funnel``, ``has(interest.x)`` without ``interest``) errs, as in CEL: the
        rules with one are compiled again for the plan (``_has_hidden``).
        The plan itself when nothing the rules read is hidden; one plan per ``hidden``,
        kept (a catalog's rules know one attribution)."""
        plan = self._masked.get(hidden)
        if plan is None:
            plan = _masked_plan(self._static, self._paths, self._nested, hidden, sources_of)
            plan = self._has_hidden(plan, hidden, sources_of)
            if len(self._masked) < 256:
                self._masked[hidden] = plan
        return plan

    def _has_hidden(
        self, plan: RulePlan, hidden: frozenset[str], sources_of: SourcesOf
    ) -> RulePlan:
        """``plan`` with the deciders of the rules that ask ``has()`` under a map hidden whole
        compiled again, that ``has()`` CEL's error (generated again where it was)."""
        gone = {
            m for _, maps in self._has_maps.values() for m in maps if _hides(m, hidden, sources_of)
        }
        if not gone:
            return plan
        index = {path: i for i, path in enumerate(self._paths)}
        getters = self._static.getters

        def slot_of(path: tuple[str, ...]) -> tuple[int, Getter]:
            i = index[path]  # compiled before: every path it reads has its slot
            return i, getters[i]

        deciders = dict(plan.deciders)
        for rule, (tree, maps) in self._has_maps.items():
            if gone.isdisjoint(maps):
                continue
            decider = _recompiled(tree, rule in self.generated, slot_of, gone)
            if decider is None:
                deciders.pop(rule, None)
            else:
                deciders[rule] = decider
        return plan._replace(deciders=deciders)

    def sources_read(self, rule: Rule, sources_of: SourcesOf) -> frozenset[str]:
        """The data sources ``rule`` may read (what a decision item says it used)."""
        out: set[str] = set()
        for path in paths_read(rule):
            out |= sources_of(path)
        return frozenset(out)

    def __repr__(self) -> str:
        return f"RuleReads({self.needs!r})"


#: a path -> the data sources it reads (``profile.sources.FeatureSources.of_path``)
SourcesOf = Callable[[tuple[str, ...]], frozenset[str]]


def paths_read(rule: Rule) -> list[tuple[str, ...]]:
    """Every path ``rule`` may read, down to what it reads whole (``("profile", "age")``,
    ``("interest", "mortgage", "count_14d")``)."""
    return [
        path for root, need in needs_of(rule.source).items() for path in _paths_of((root,), need)
    ]


def _paths_of(prefix: tuple[str, ...], need: Need) -> list[tuple[str, ...]]:
    """Every path a need tree names, down to what is read whole."""
    if need is None:
        return [prefix]
    out: list[tuple[str, ...]] = []
    for key, sub in need.items():
        out += _paths_of((*prefix, key), sub)
    return out or [prefix]


def _hides(path: tuple[str, ...], hidden: frozenset[str], sources_of: SourcesOf) -> bool:
    """A view hiding ``hidden`` hides the map at ``path`` whole, as ``_masked_read`` masks
    it for CEL: a root other than ``traits`` and ``profile`` read as absent (its sources are
    its paths', ``FeatureSources.of_path``), or a key ``profile`` loses."""
    if path in (("traits",), ("profile",)):
        return False
    return not hidden.isdisjoint(sources_of(path))


def _recompiled(
    tree: Node, generated: bool, slot_of: SlotOf, gone: set[tuple[str, ...]]
) -> Decider | None:
    """A compiled rule's decider for a view hiding the maps ``gone``: a ``has()`` under one
    of them CEL's error (``Compiler.has_hidden``); generated again when it was. None (the
    rule runs in CEL) only if the closures no longer cover it, which they did once."""
    made = generate(tree, RULE_ROOTS, slot_of, gone.__contains__) if generated else None
    if made is not None:
        return made.decider
    return compile_decider(tree, RULE_ROOTS, slot_of, gone.__contains__)


def _absent(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
    return _MISSING


def _without(
    read: Callable[[Any, Any, float, Any], Any], keep: Callable[[str], bool]
) -> Callable[[Any, Any, float, Any], Any]:
    """``read``'s map without the keys ``keep`` refuses."""

    def get(p: Profile, topics: Mapping[str, TopicSpec], now: float, ctx: Any) -> Any:
        value = read(p, topics, now, ctx)
        if not isinstance(value, dict):
            return value
        return {k: v for k, v in value.items() if keep(k)}

    return get


def _masked_read(
    path: tuple[str, ...],
    read: Callable[[Any, Any, float, Any], Any],
    hidden: frozenset[str],
    sources_of: SourcesOf,
    need: Need = None,
) -> Callable[[Any, Any, float, Any], Any] | None:
    """What reads ``path`` (narrowed to ``need`` below it) in a view hiding ``hidden``:
    None when nothing it reads is hidden, the map without its hidden keys for ``traits``
    and ``profile`` read whole, else absent."""
    read_sources: set[str] = set()
    for full in _paths_of(path, need):
        read_sources |= sources_of(full)
    if hidden.isdisjoint(read_sources):
        return None
    if path == ("traits",):
        return _without(read, lambda k: hidden.isdisjoint(sources_of(("traits", k))))
    if path == ("profile",):
        return _without(read, lambda k: hidden.isdisjoint(sources_of(("profile", k))))
    return _absent


def _masked_plan(
    plan: RulePlan,
    paths: Sequence[tuple[str, ...]],
    nested: Mapping[str, Need],
    hidden: frozenset[str],
    sources_of: SourcesOf,
) -> RulePlan:
    """``RuleReads.masked``: ``plan`` with the reads of hidden sources masked."""
    getters = list(plan.getters)
    roots = dict(plan.roots)
    preset: list[tuple[int, Getter | None]] = []
    changed = False
    for i, path in enumerate(paths):
        masked = _masked_read(path, getters[i], hidden, sources_of)
        if masked is not None:
            getters[i], changed = masked, True
            preset.append((i, None if masked is _absent else masked))
    for root, read in plan.roots.items():
        masked = _masked_read((root,), read, hidden, sources_of, nested.get(root))
        if masked is not None:
            roots[root], changed = masked, True
    if not changed:
        return plan
    return RulePlan(
        tuple(getters), plan.deciders, plan.programs, plan.fallbacks, roots, tuple(preset)
    )


def _merge_tree(into: dict[str, Need], name: str, need: Need) -> None:
    """Merge one need tree into another at key ``name``; a whole value absorbs the rest."""
    if name in into and into[name] is None:
        return
    if need is None:
        into[name] = None
        return
    node = into.get(name)
    if node is None:
        node = into[name] = {}
    for key, sub in need.items():
        _merge_tree(node, key, sub)
