"""The hidden response model: its properties, its draws, and its validated parameter file."""

from __future__ import annotations

import copy
import functools
import random
import re
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.errors import ConfigError
from nextbest.sim.response import (
    DEFAULT_PARAMS_PATH,
    ResponseModel,
    ResponseParams,
    load_params,
    parse_params,
)

COMMERCIAL_TOPICS = [
    "mortgage",
    "car_loan",
    "pension",
    "child_savings",
    "investing",
    "cards",
    "personal_loan",
    "travel_insurance",
    "home_insurance",
    "savings",
]
ALL_TOPICS = [*COMMERCIAL_TOPICS, "overdraft", "payments"]


@functools.cache
def default_model() -> ResponseModel:
    return ResponseModel(load_params())


@pytest.fixture
def model() -> ResponseModel:
    return default_model()


def default_data() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def with_changes(**changes: Any) -> ResponseModel:
    """The default model with some click parameters replaced (``commercial={...}`` merges)."""
    data = default_data()
    for key, value in changes.items():
        if isinstance(value, dict):
            data["click"][key].update(value)
        else:
            data["click"][key] = value
    return ResponseModel(parse_params(data))


def click_kwargs(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "offer_topic": "mortgage",
        "offer_kind": "commercial",
        "position": 1,
        "needs": {},
        "impressions_before": 0,
        "overdrawn": False,
        "age": 45,
    }
    kw.update(over)
    return kw


# ---------------------------------------------------------------------------- click
@pytest.mark.parametrize("topic", COMMERCIAL_TOPICS)
@pytest.mark.parametrize("position", [1, 2, 3])
def test_stronger_matching_need_clicks_more(
    model: ResponseModel, topic: str, position: int
) -> None:
    def p(needs: dict[str, float]) -> float:
        return model.p_click(**click_kwargs(offer_topic=topic, position=position, needs=needs))

    other = "cards" if topic != "cards" else "mortgage"
    strong, weak = p({topic: 0.9}), p({topic: 0.3})
    assert strong > weak > p({}) > 0
    # a need for another topic does not make this offer relevant
    assert p({other: 0.9}) == p({})


@pytest.mark.parametrize("topic", [*COMMERCIAL_TOPICS, None])
def test_banner_click_rates_are_realistic(model: ResponseModel, topic: str | None) -> None:
    for position in (1, 2, 3):
        unmatched = model.p_click(**click_kwargs(offer_topic=topic, position=position, age=55))
        assert 0.001 <= unmatched <= 0.005
    if topic is not None:
        matched = model.p_click(**click_kwargs(offer_topic=topic, needs={topic: 0.9}, age=55))
        assert 0.03 <= matched <= 0.10


@pytest.mark.parametrize("kind", ["commercial", "service"])
@pytest.mark.parametrize("strength", [None, 0.3, 0.9])
def test_position_bias(model: ResponseModel, kind: str, strength: float | None) -> None:
    needs = {} if strength is None else {"payments": strength}
    p = [
        model.p_click(
            **click_kwargs(offer_topic="payments", offer_kind=kind, position=k, needs=needs)
        )
        for k in (1, 2, 3, 5, 10, 100, 1000)
    ]
    assert p == sorted(p, reverse=True)
    assert len(set(p)) == len(p)


@pytest.mark.parametrize("kind", ["commercial", "service"])
@pytest.mark.parametrize("strength", [None, 0.5, 1.0])
def test_fatigue_lowers_clicks_with_every_impression(
    model: ResponseModel, kind: str, strength: float | None
) -> None:
    needs = {} if strength is None else {"overdraft": strength}
    p = [
        model.p_click(
            **click_kwargs(
                offer_topic="overdraft", offer_kind=kind, needs=needs, impressions_before=n
            )
        )
        for n in (0, 1, 2, 3, 5, 10, 20)
    ]
    assert p == sorted(p, reverse=True)
    assert len(set(p)) == len(p)
    # fatigue has a floor: a message seen very often is still clicked now and then
    kind_params = getattr(model.params.click, kind)
    far = model.p_click(
        **click_kwargs(
            offer_topic="overdraft", offer_kind=kind, needs=needs, impressions_before=10_000
        )
    )
    assert far == pytest.approx(p[0] * kind_params.fatigue_floor)


def test_overdraft_warning_is_clicked_when_overdrawn(model: ResponseModel) -> None:
    def p(*, overdrawn: bool, needs: dict[str, float], position: int = 1) -> float:
        kw = click_kwargs(
            offer_topic="overdraft",
            offer_kind="service",
            needs=needs,
            overdrawn=overdrawn,
            position=position,
        )
        return model.p_click(**kw)

    assert p(overdrawn=True, needs={}) >= 0.15
    assert p(overdrawn=True, needs={}, position=3) >= 0.05
    assert p(overdrawn=False, needs={}) <= 0.005
    assert p(overdrawn=True, needs={}) > 20 * p(overdrawn=False, needs={})
    # an overdraft need (help pages read) makes it relevant too, if less than the red balance
    assert p(overdrawn=False, needs={}) < p(overdrawn=False, needs={"overdraft": 0.5})
    assert p(overdrawn=False, needs={"overdraft": 0.5}) < p(overdrawn=True, needs={})
    # being overdrawn does not make other service messages relevant
    kw = click_kwargs(offer_topic="payments", offer_kind="service")
    assert model.p_click(**{**kw, "overdrawn": True}) == model.p_click(**kw)


def test_overdrawn_customers_prefer_the_warning_over_commercial_offers(
    model: ResponseModel,
) -> None:
    warning = model.p_click(
        **click_kwargs(offer_topic="overdraft", offer_kind="service", overdrawn=True)
    )
    for topic in COMMERCIAL_TOPICS:
        needs = {topic: 1.0}
        calm = model.p_click(**click_kwargs(offer_topic=topic, needs=needs))
        red = model.p_click(**click_kwargs(offer_topic=topic, needs=needs, overdrawn=True))
        assert warning > calm > red


def test_turning_18_package_is_clicked_when_the_payments_need_is_active(
    model: ResponseModel,
) -> None:
    def p(needs: dict[str, float]) -> float:
        kw = click_kwargs(offer_topic="payments", offer_kind="service", needs=needs, age=18)
        return model.p_click(**kw)

    assert p({"payments": 0.8}) >= 0.15
    assert p({}) <= 0.005
    assert p({"payments": 0.8}) > p({"payments": 0.3}) > p({})


def test_pension_matters_little_when_young(model: ResponseModel) -> None:
    def p(age: int) -> float:
        kw = click_kwargs(offer_topic="pension", needs={"pension": 0.8}, age=age)
        return model.p_click(**kw)

    assert p(25) < p(45) < p(58)
    assert p(58) == p(90) == p(500)  # ages past MAX_AGE read the last entry
    assert p(-1) == p(0) == p(25)
    # age bands touch no other topic
    kw = click_kwargs(offer_topic="mortgage", needs={"mortgage": 0.8})
    assert model.p_click(**{**kw, "age": 25}) == model.p_click(**{**kw, "age": 58})


def test_strength_above_one_counts_as_one(model: ResponseModel) -> None:
    one = model.p_click(**click_kwargs(needs={"mortgage": 1.0}))
    assert model.p_click(**click_kwargs(needs={"mortgage": 7.0})) == one
    assert model.p_convert_after_click(offer_topic="mortgage", needs={"mortgage": 7.0}) == (
        model.p_convert_after_click(offer_topic="mortgage", needs={"mortgage": 1.0})
    )
    assert model.p_organic(topic="mortgage", strength=7.0) == model.p_organic(
        topic="mortgage", strength=1.0
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("offer_kind", "banner", "unknown offer kind"),
        ("position", 0, "position must be 1 or more"),
        ("impressions_before", -1, "impressions_before must be 0 or more"),
    ],
)
def test_misuse_is_refused(model: ResponseModel, field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.p_click(**click_kwargs(**{field: value}))


# ---------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_conversion_after_click_follows_need_strength(model: ResponseModel, topic: str) -> None:
    def p(needs: dict[str, float]) -> float:
        return model.p_convert_after_click(offer_topic=topic, needs=needs)

    assert p({topic: 0.9}) > p({topic: 0.5}) > p({topic: 0.1}) > p({})
    assert p({topic: 0.9}) >= 0.15
    assert p({}) <= 0.005
    assert p({"mortgage" if topic != "mortgage" else "cards": 1.0}) == p({})
    assert model.p_convert_after_click(offer_topic=None, needs={topic: 1.0}) <= 0.005


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_organic_conversion_exists_and_rises_with_strength(
    model: ResponseModel, topic: str
) -> None:
    p = [model.p_organic(topic=topic, strength=s) for s in (0.0, 0.1, 0.4, 0.7, 1.0)]
    assert p[0] == 0.0
    assert p == sorted(p)
    assert len(set(p)) == len(p)
    assert 0.0005 <= p[-1] <= 0.05  # per day: a long need converts on its own now and then


def test_a_click_converts_far_more_than_a_day_without_offer(model: ResponseModel) -> None:
    for topic in COMMERCIAL_TOPICS:
        needs = {topic: 0.7}
        assert model.p_convert_after_click(offer_topic=topic, needs=needs) > 10 * model.p_organic(
            topic=topic, strength=0.7
        )


# ---------------------------------------------------------------------------- clamping
def test_probabilities_are_clamped_to_one() -> None:
    data = default_data()
    data["click"]["commercial"].update(base=1.0, match_gain=1.0)
    data["click"]["overdrawn_commercial_factor"] = 100.0
    data["click"]["age"] = [{"topic": "mortgage", "min_age": 0, "max_age": 120, "factor": 100.0}]
    data["convert"].update(base=1.0, gain=1.0)
    data["organic"].update(base=1.0, gain=1.0)
    data["topics"] = [{"topic": "mortgage", "convert": 100.0, "organic": 100.0}]
    m = ResponseModel(parse_params(data))
    needs = {"mortgage": 1.0}
    assert m.p_click(**click_kwargs(needs=needs, overdrawn=True)) == 1.0
    assert m.p_convert_after_click(offer_topic="mortgage", needs=needs) == 1.0
    assert m.p_organic(topic="mortgage", strength=1.0) == 1.0
    rng = random.Random(3)
    assert all(m.click(rng, **click_kwargs(needs=needs, overdrawn=True)) for _ in range(1000))


def test_probabilities_are_clamped_to_zero() -> None:
    data = default_data()
    for kind in ("commercial", "service"):
        data["click"][kind].update(base=0.0, match_gain=0.0)
    data["convert"].update(base=0.0, gain=0.0)
    m = ResponseModel(parse_params(data))
    kw = click_kwargs(needs={"mortgage": 1.0})
    assert m.p_click(**kw) == 0.0
    assert m.p_convert_after_click(offer_topic="mortgage", needs={"mortgage": 1.0}) == 0.0
    assert m.p_organic(topic="mortgage", strength=-3.0) == 0.0
    rng = random.Random(3)
    assert not any(m.click(rng, **kw) for _ in range(1000))


@settings(max_examples=200, deadline=None)
@given(
    topic=st.sampled_from([*ALL_TOPICS, None, "insurance"]),
    kind=st.sampled_from(["commercial", "service"]),
    position=st.integers(1, 10_000),
    needs=st.dictionaries(
        st.sampled_from([*ALL_TOPICS, "insurance"]),
        st.floats(-5, 5, allow_nan=False),
        max_size=8,
    ),
    impressions=st.integers(0, 100_000),
    overdrawn=st.booleans(),
    age=st.integers(-10, 1000),
)
def test_every_probability_is_in_the_unit_interval(
    topic: str | None,
    kind: str,
    position: int,
    needs: dict[str, float],
    impressions: int,
    overdrawn: bool,
    age: int,
) -> None:
    m = default_model()
    p = m.p_click(
        offer_topic=topic,
        offer_kind=kind,
        position=position,
        needs=needs,
        impressions_before=impressions,
        overdrawn=overdrawn,
        age=age,
    )
    assert 0.0 <= p <= 1.0
    assert 0.0 <= m.p_convert_after_click(offer_topic=topic, needs=needs) <= 1.0
    for t, s in needs.items():
        assert 0.0 <= m.p_organic(topic=t, strength=s) <= 1.0


# ---------------------------------------------------------------------------- draws
def draws(model: ResponseModel, seed: int, n: int = 500) -> list[tuple[bool, bool, bool]]:
    rng = random.Random(seed)
    kw = click_kwargs(needs={"mortgage": 0.9})
    return [
        (
            model.click(rng, **kw),
            model.convert(rng, offer_topic="mortgage", needs={"mortgage": 0.9}),
            model.organic(rng, topic="mortgage", strength=0.9),
        )
        for _ in range(n)
    ]


def test_same_seed_same_draws(model: ResponseModel) -> None:
    assert draws(model, 11) == draws(model, 11)
    assert draws(ResponseModel(load_params()), 11) == draws(model, 11)
    assert draws(model, 11) != draws(model, 12)


def test_each_draw_takes_exactly_one_random_number(model: ResponseModel) -> None:
    kw = click_kwargs(needs={"mortgage": 0.9})
    p = model.p_click(**kw)
    for seed in range(200):
        rng, twin = random.Random(seed), random.Random(seed)
        assert model.click(rng, **kw) == (twin.random() < p)
        assert model.convert(rng, offer_topic="cards", needs={}) == (
            twin.random() < model.p_convert_after_click(offer_topic="cards", needs={})
        )
        assert model.organic(rng, topic="pension", strength=0.5) == (
            twin.random() < model.p_organic(topic="pension", strength=0.5)
        )
        assert rng.getstate() == twin.getstate()


def cases() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "matched click", click_kwargs(needs={"mortgage": 0.9})
    yield "unmatched click", click_kwargs(position=2)
    yield (
        "overdraft warning",
        click_kwargs(offer_topic="overdraft", offer_kind="service", overdrawn=True, position=2),
    )
    yield (
        "tired click",
        click_kwargs(needs={"cards": 0.6}, offer_topic="cards", impressions_before=4),
    )


@pytest.mark.parametrize(("name", "kw"), list(cases()), ids=[name for name, _ in cases()])
def test_empirical_click_rate_matches_p_click(
    model: ResponseModel, name: str, kw: dict[str, Any]
) -> None:
    rng, n = random.Random(f"click:{name}"), 40_000
    p = model.p_click(**kw)
    hits = sum(model.click(rng, **kw) for _ in range(n))
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(hits / n - p) <= 4 * sd + 1e-9


@pytest.mark.parametrize("strength", [0.2, 0.9])
def test_empirical_conversion_rates_match(model: ResponseModel, strength: float) -> None:
    n = 40_000
    rng = random.Random(f"convert:{strength}")
    needs = {"car_loan": strength}
    p = model.p_convert_after_click(offer_topic="car_loan", needs=needs)
    hits = sum(model.convert(rng, offer_topic="car_loan", needs=needs) for _ in range(n))
    assert abs(hits / n - p) <= 4 * (p * (1 - p) / n) ** 0.5
    q = model.p_organic(topic="car_loan", strength=strength)
    hits = sum(model.organic(rng, topic="car_loan", strength=strength) for _ in range(n))
    assert abs(hits / n - q) <= 4 * (q * (1 - q) / n) ** 0.5


def test_needs_are_never_mutated(model: ResponseModel) -> None:
    needs = {"mortgage": 0.9, "overdraft": 0.4, "pension": 0.2}
    before = copy.deepcopy(needs)
    frozen = MappingProxyType(needs)  # read-only: any write would raise
    rng = random.Random(5)
    for topic in [*ALL_TOPICS, None]:
        for kind in ("commercial", "service"):
            for overdrawn in (False, True):
                kw = click_kwargs(offer_topic=topic, offer_kind=kind, overdrawn=overdrawn)
                model.p_click(**{**kw, "needs": frozen})
                model.click(rng, **{**kw, "needs": needs})
        model.p_convert_after_click(offer_topic=topic, needs=frozen)
        model.convert(rng, offer_topic=topic, needs=needs)
    assert needs == before


# ---------------------------------------------------------------------------- parameters
def test_packaged_parameters_load() -> None:
    params = load_params()
    assert isinstance(params, ResponseParams)
    assert params == load_params(DEFAULT_PARAMS_PATH) == load_params(str(DEFAULT_PARAMS_PATH))
    assert params.click.overdraft_topic == "overdraft"
    assert {t.topic for t in params.topics} == set(ALL_TOPICS)
    # round trip: the Struct is the file
    assert parse_params(msgspec.to_builtins(params)) == params


def leaves(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def set_at(data: Any, path: str, value: Any) -> None:
    parts = path[2:].replace("[", ".[").split(".")
    target = data
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = value
    else:
        target[last] = value


LEAVES = list(leaves(default_data()))


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "response.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_file_has_every_kind_of_value() -> None:
    assert len(LEAVES) >= 40
    assert {type(v) for _, v in LEAVES} == {int, float, str}


@pytest.mark.parametrize("path", [p for p, _ in LEAVES])
def test_every_value_is_validated(tmp_path: Path, path: str) -> None:
    value = dict(LEAVES)[path]
    bad: list[Any] = ["", None] if isinstance(value, str) else [-1, "0.5", True, None]
    for wrong in bad:
        data = default_data()
        set_at(data, path, wrong)
        with pytest.raises(ConfigError) as info:
            load_params(write(tmp_path, data))
        message = str(info.value)
        assert f": {path}: " in message, message
        assert message.startswith(f"{tmp_path / 'response.yaml'}:")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$.click.commercial.base", 1.5),
        ("$.click.commercial.match_gain", 2),
        ("$.click.commercial.fatigue_decay", 0),
        ("$.click.commercial.fatigue_decay", 1.01),
        ("$.click.service.fatigue_floor", 1.2),
        ("$.click.overdrawn_relevance", 1.1),
        ("$.click.match_exponent", 0),
        ("$.click.position_eta", 11),
        ("$.click.overdrawn_commercial_factor", 101),
        ("$.click.age[0].max_age", 121),
        ("$.click.age[0].factor", float("inf")),
        ("$.convert.base", 1.0001),
        ("$.organic.gain", float("nan")),
        ("$.organic.exponent", 0.0),
        ("$.topics[2].organic", 1000),
    ],
)
def test_values_out_of_range_are_refused(tmp_path: Path, path: str, value: Any) -> None:
    data = default_data()
    set_at(data, path, value)
    with pytest.raises(ConfigError, match=f": {re.escape(path)}: "):
        load_params(write(tmp_path, data))


def test_error_names_the_line(tmp_path: Path) -> None:
    text = DEFAULT_PARAMS_PATH.read_text(encoding="utf-8").replace(
        "match_gain: 0.25", "match_gain: 25"
    )
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    line = 1 + text.splitlines().index("    match_gain: 25")
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "r.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'r.yaml'}:{line}: $.click.service.match_gain: Expected `float` <= 1.0"
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["click"].update(fatigue=0.5), "unknown field `fatigue`"),
        (lambda d: d.pop("organic"), r"\$.organic: Object missing required field `organic`"),
        (
            lambda d: d["click"]["age"].append(
                {"topic": "pension", "min_age": 50, "max_age": 40, "factor": 1.0}
            ),
            r"\$.click.age\[2\]: min_age 50 is above max_age 40",
        ),
        (
            lambda d: d["topics"].append({"topic": "cards", "convert": 1.0, "organic": 1.0}),
            r"\$: topic 'cards' is listed twice",
        ),
    ],
)
def test_structural_problems_are_refused(tmp_path: Path, edit: Any, expected: str) -> None:
    data = default_data()
    edit(data)
    with pytest.raises(ConfigError, match=expected):
        load_params(write(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("click: [1, 2\n", r"r.yaml:\d+: \$: YAML: "),
        ("- just\n- a list\n", r"r.yaml: \$: response parameters must be a mapping"),
        ("", r"r.yaml: \$: response parameters must be a mapping"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_params(tmp_path / "r.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read response parameters"):
        load_params(tmp_path / "absent.yaml")


def test_params_are_frozen() -> None:
    params = load_params()
    with pytest.raises(AttributeError):
        params.click = params.click  # type: ignore[misc]
