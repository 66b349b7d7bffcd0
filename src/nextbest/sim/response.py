"""The synthetic bank's hidden response model: who clicks, who converts, who converts anyway.

The engine never sees this module (it lives in ``sim/`` and nothing outside ``sim/`` imports
it); only the simulated customers and the oracle policy do. Every number comes from
``response.yaml`` next to this file (or another file of the same shape), validated on load.

Notation: ``s`` is the customer's need strength for the offer's topic, ``needs[topic]``
clamped to [0, 1] and 0 when the customer has no such need (or the offer has no topic);
``k >= 1`` is the slot position; ``n >= 0`` the number of earlier impressions of this offer
to this customer. ``clamp`` limits a value to [0, 1].

Click, for an offer of kind ``K`` (``commercial`` or ``service``) and topic ``t``::

    s'         = max(s, overdrawn_relevance)  if K is service, t is overdraft_topic, overdrawn
                 s                             otherwise
    appeal     = base[K] + match_gain[K] * s' ** match_exponent
                 (times overdrawn_commercial_factor for a commercial offer while overdrawn)
    examined   = 1 / k ** position_eta                                  position bias
    fatigue    = floor[K] + (1 - floor[K]) * fatigue_decay[K] ** n      repeated impressions
                 (matched_fatigue_floor[K] and matched_fatigue_decay[K] instead, where set,
                 while s' > 0: a customer who needs the offer comes back to it)
    age_factor = product of ``factor`` over the ``click.age`` bands of t containing the age
    offer_factor = product of ``factor`` over the ``click.offers`` bands of this offer
                 containing the age (an offer's own appeal; none in the default world)
    P(click)   = clamp(appeal * examined * fatigue * age_factor * offer_factor)

Conversion (the offer's KPI event) after a click, and organic conversion per day of an
active need without any offer (the control group's baseline)::

    P(convert | click) = clamp((convert.base + convert.gain * s ** convert.exponent)
                               * topics[t].convert)
    P(organic, 1 day)  = clamp((organic.base + organic.gain * s ** organic.exponent)
                               * topics[t].organic)

Hence: a matched offer beats an unmatched one and a strong need a weak one; position 1 beats
position 2 beats position 3; every earlier impression lowers the click probability; a service
message is clicked when it concerns the customer (the overdraft warning while overdrawn, the
turning-18 package while the payments need is active) and rarely otherwise; no need means
almost no conversion after a click; organic conversions rise with the need's strength.

The draw methods (``click``, ``convert``, ``organic``) take exactly one ``rng.random()``
each, whatever the parameters, so a simulation stays aligned draw for draw when only the
parameters change. Tables (position, fatigue, age) are computed once in ``ResponseModel``;
a call allocates nothing beyond its float results.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from nextbest.errors import ConfigError, split_msgspec_message

__all__ = [
    "DEFAULT_PARAMS_PATH",
    "MAX_AGE",
    "AgeBand",
    "ClickParams",
    "KindParams",
    "OfferAppeal",
    "RateParams",
    "ResponseModel",
    "ResponseParams",
    "TopicFactors",
    "load_params",
    "parse_params",
]

#: the packaged parameters (shipped in the wheel with the module)
DEFAULT_PARAMS_PATH = Path(__file__).with_name("response.yaml")
#: ages above this are treated as this age
MAX_AGE = 120
#: positions and impression counts below these read a precomputed table
_POSITIONS = 64
_IMPRESSIONS = 256

Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Factor = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Exponent = Annotated[float, msgspec.Meta(gt=0.0, le=10.0)]
Decay = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Age = Annotated[int, msgspec.Meta(ge=0, le=MAX_AGE)]
TopicId = Annotated[str, msgspec.Meta(min_length=1)]


class KindParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Click parameters of one offer kind (commercial or service)."""

    base: Probability  # click probability without a matching need (position 1, first view)
    match_gain: Probability  # added click probability at need strength 1
    fatigue_decay: Decay  # share of the fading appeal each earlier impression keeps
    fatigue_floor: Probability  # share of the first appeal that never fades
    #: the same two while the customer has a need for the offer's topic (None: as above)
    matched_fatigue_decay: Decay | None = None
    matched_fatigue_floor: Probability | None = None


class AgeBand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Scales the click probability of ``topic``'s offers for ages in [min_age, max_age]."""

    topic: TopicId
    min_age: Age
    max_age: Age
    factor: Factor

    def __post_init__(self) -> None:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")


class OfferAppeal(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Scales the click probability of one offer (by id) for ages in [min_age, max_age]:
    what customers think of this offer's own terms, beyond its topic."""

    offer: TopicId
    factor: Factor
    min_age: Age = 0
    max_age: Age = MAX_AGE

    def __post_init__(self) -> None:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")


class ClickParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    position_eta: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)]
    match_exponent: Exponent
    commercial: KindParams
    service: KindParams
    overdraft_topic: TopicId
    overdrawn_relevance: Probability
    overdrawn_commercial_factor: Factor
    age: tuple[AgeBand, ...] = ()
    offers: tuple[OfferAppeal, ...] = ()


class RateParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``base + gain * strength ** exponent``, before the topic's factor."""

    base: Probability
    gain: Probability
    exponent: Exponent


class TopicFactors(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: TopicId
    convert: Factor
    organic: Factor


class ResponseParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every number of the response model, as in ``response.yaml``."""

    click: ClickParams
    convert: RateParams
    organic: RateParams
    topics: tuple[TopicFactors, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.topics:
            if f.topic in seen:
                raise ValueError(f"topic {f.topic!r} is listed twice in `topics`")
            seen.add(f.topic)


# ---------------------------------------------------------------------------- loading
def load_params(path: str | Path | None = None) -> ResponseParams:
    """Read and validate response parameters; the packaged ``response.yaml`` by default.

    Raises ConfigError naming the file, the line and the field path of the first problem.
    """
    file = DEFAULT_PARAMS_PATH if path is None else Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read response parameters: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        raise ConfigError(f"{where}: $: YAML: {str(exc).splitlines()[0]}") from exc
    return parse_params(data, source=str(file), text=text)


def parse_params(
    data: Any, *, source: str = "<response parameters>", text: str | None = None
) -> ResponseParams:
    """Validate plain data (as loaded from YAML); ``text`` (the YAML) adds line numbers."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: $: response parameters must be a mapping")
    try:
        return msgspec.convert(data, ResponseParams)
    except msgspec.ValidationError as exc:
        reason, path = split_msgspec_message(str(exc))
        line = _line_of(text, path) if text is not None else None
        where = source if line is None else f"{source}:{line}"
        raise ConfigError(f"{where}: {path}: {reason}") from exc


def _line_of(text: str, path: str) -> int | None:
    """The line of ``path`` (``$.click.age[1].factor``) in the YAML, or of its nearest parent."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - the text already loaded once
        return None
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, at: str) -> None:
        lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[f"{at}.{key.value}"] = key.start_mark.line + 1
                walk(value, f"{at}.{key.value}")
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{at}[{i}]")

    if root is None:
        return None
    walk(root, "$")
    probe = path
    while probe not in lines:
        cut = max(probe.rfind("."), probe.rfind("["))
        if cut <= 0:
            return None
        probe = probe[:cut]
    return lines[probe]


# ---------------------------------------------------------------------------- the model
def _age_tables(
    bands: Iterable[tuple[str, int, int, float]],
) -> dict[str, tuple[float, ...]]:
    """key -> factor per age 0..MAX_AGE, the factors of every band of that key multiplied."""
    tables: dict[str, list[float]] = {}
    for key, low, high, factor in bands:
        table = tables.setdefault(key, [1.0] * (MAX_AGE + 1))
        for a in range(low, high + 1):
            table[a] *= factor
    return {key: tuple(table) for key, table in tables.items()}


class _Kind:
    """One offer kind's click parameters with its fatigue tables (matched needs apart)."""

    __slots__ = ("base", "fatigue", "gain", "matched", "service")

    def __init__(self, p: KindParams, *, service: bool) -> None:
        self.base = p.base
        self.gain = p.match_gain
        self.service = service
        self.fatigue = _Fade(p.fatigue_decay, p.fatigue_floor)
        decay = p.fatigue_decay if p.matched_fatigue_decay is None else p.matched_fatigue_decay
        floor = p.fatigue_floor if p.matched_fatigue_floor is None else p.matched_fatigue_floor
        self.matched = _Fade(decay, floor)


class _Fade:
    """``floor + (1 - floor) * decay ** n``, tabled for the first impressions."""

    __slots__ = ("decay", "floor", "table")

    def __init__(self, decay: float, floor: float) -> None:
        self.decay = decay
        self.floor = floor
        self.table = tuple(self.at(n) for n in range(_IMPRESSIONS))

    def at(self, n: int) -> float:
        return self.floor + (1.0 - self.floor) * self.decay**n


class ResponseModel:
    """P(click), P(convert | click) and P(organic conversion) of a simulated customer.

    Pure and deterministic: the ``p_*`` methods are functions of their arguments; the draw
    methods take their chance from the ``random.Random`` passed in. Never mutates ``needs``.
    """

    __slots__ = (
        "_age",
        "_convert",
        "_convert_factor",
        "_eta",
        "_exam",
        "_exp",
        "_kinds",
        "_offer_age",
        "_organic",
        "_organic_factor",
        "_overdraft_topic",
        "_overdrawn_commercial",
        "_overdrawn_relevance",
        "params",
    )

    def __init__(self, params: ResponseParams) -> None:
        self.params = params
        c = params.click
        self._eta = c.position_eta
        self._exp = c.match_exponent
        self._exam = (1.0, *(1.0 / k**c.position_eta for k in range(1, _POSITIONS)))
        self._kinds = {
            "commercial": _Kind(c.commercial, service=False),
            "service": _Kind(c.service, service=True),
        }
        self._overdraft_topic = c.overdraft_topic
        self._overdrawn_relevance = c.overdrawn_relevance
        self._overdrawn_commercial = c.overdrawn_commercial_factor
        ages = _age_tables((b.topic, b.min_age, b.max_age, b.factor) for b in c.age)
        self._age = ages
        self._offer_age = _age_tables((a.offer, a.min_age, a.max_age, a.factor) for a in c.offers)
        self._convert = (params.convert.base, params.convert.gain, params.convert.exponent)
        self._organic = (params.organic.base, params.organic.gain, params.organic.exponent)
        self._convert_factor = {f.topic: f.convert for f in params.topics}
        self._organic_factor = {f.topic: f.organic for f in params.topics}

    def __repr__(self) -> str:
        return f"ResponseModel({self.params!r})"

    # ------------------------------------------------------------------ probabilities
    def p_click(
        self,
        *,
        offer_topic: str | None,
        offer_kind: str,
        position: int,
        needs: Mapping[str, float],
        impressions_before: int,
        overdrawn: bool,
        age: int,
        offer: str | None = None,
    ) -> float:
        """The chance the customer clicks this offer shown in slot ``position`` (1 = first);
        ``offer``: its id, for the offer's own appeal (``click.offers``)."""
        kind = self._kinds.get(offer_kind)
        if kind is None:
            raise ValueError(f"unknown offer kind {offer_kind!r}; use commercial or service")
        if position < 1:
            raise ValueError(f"position must be 1 or more, got {position}")
        if impressions_before < 0:
            raise ValueError(f"impressions_before must be 0 or more, got {impressions_before}")
        if offer_topic is None:
            s = 0.0
            scale = 1.0
        else:
            s = needs.get(offer_topic, 0.0)
            table = self._age.get(offer_topic)
            if table is None:
                scale = 1.0
            else:
                scale = table[age if 0 <= age <= MAX_AGE else (0 if age < 0 else MAX_AGE)]
        if offer is not None and self._offer_age:
            own = self._offer_age.get(offer)
            if own is not None:
                scale *= own[age if 0 <= age <= MAX_AGE else (0 if age < 0 else MAX_AGE)]
        if overdrawn:
            if not kind.service:
                scale *= self._overdrawn_commercial
            elif offer_topic == self._overdraft_topic and s < self._overdrawn_relevance:
                s = self._overdrawn_relevance
        appeal = kind.base
        if s > 0.0:
            appeal += kind.gain * (1.0 if s >= 1.0 else s**self._exp)
        examined = self._exam[position] if position < _POSITIONS else position**-self._eta
        fade = kind.matched if s > 0.0 else kind.fatigue
        fatigue = (
            fade.table[impressions_before]
            if impressions_before < _IMPRESSIONS
            else fade.at(impressions_before)
        )
        p = appeal * examined * fatigue * scale  # scale: age band x overdrawn factor
        return 1.0 if p > 1.0 else (p if p > 0.0 else 0.0)

    def p_convert_after_click(
        self, *, offer_topic: str | None, needs: Mapping[str, float]
    ) -> float:
        """The chance a click leads to the offer's KPI event (conversion)."""
        base, gain, exponent = self._convert
        if offer_topic is None:
            p = base
        else:
            s = needs.get(offer_topic, 0.0)
            if s > 0.0:
                base += gain * (1.0 if s >= 1.0 else s**exponent)
            p = base * self._convert_factor.get(offer_topic, 1.0)
        return 1.0 if p > 1.0 else (p if p > 0.0 else 0.0)

    def p_organic(self, *, topic: str, strength: float) -> float:
        """The chance, per day, that a customer with this need converts without any offer."""
        base, gain, exponent = self._organic
        if strength > 0.0:
            base += gain * (1.0 if strength >= 1.0 else strength**exponent)
        p = base * self._organic_factor.get(topic, 1.0)
        return 1.0 if p > 1.0 else (p if p > 0.0 else 0.0)

    # ------------------------------------------------------------------ draws
    def click(
        self,
        rng: random.Random,
        *,
        offer_topic: str | None,
        offer_kind: str,
        position: int,
        needs: Mapping[str, float],
        impressions_before: int,
        overdrawn: bool,
        age: int,
        offer: str | None = None,
    ) -> bool:
        """Does the customer click? One ``rng.random()`` draw."""
        return rng.random() < self.p_click(
            offer_topic=offer_topic,
            offer_kind=offer_kind,
            position=position,
            needs=needs,
            impressions_before=impressions_before,
            overdrawn=overdrawn,
            age=age,
            offer=offer,
        )

    def convert(
        self, rng: random.Random, *, offer_topic: str | None, needs: Mapping[str, float]
    ) -> bool:
        """Does the click convert? One ``rng.random()`` draw."""
        return rng.random() < self.p_convert_after_click(offer_topic=offer_topic, needs=needs)

    def organic(self, rng: random.Random, *, topic: str, strength: float) -> bool:
        """Does the customer convert today on their own? One ``rng.random()`` draw."""
        return rng.random() < self.p_organic(topic=topic, strength=strength)
