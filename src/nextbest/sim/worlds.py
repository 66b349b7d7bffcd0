"""The zoo of worlds: named synthetic banks that differ in *structure*, to judge a strategy
on all of them (docs/worlds.md gives each world's assumptions and sources).

A world only changes what the simulated customers do and how they respond: their life
events and needs (``needs.py``), how needs show in browsing, how often they visit
(``PopulationParams``), what they think of an offer (``response.OfferAppeal``), and which
offers the bank runs (catalog overlays under ``sim/catalogs/``, added to the bank's catalog,
and changes to its offers' fields). The engine never imports this module and never reads
a world's hidden parameters: it sees the catalog and the events, as in production.

- ``default``: today's world, byte for byte (the bank's catalog as given).
- every other world is a *zoo* world. It shares a base that makes a policy's choices
  matter (docs/worlds.md says why each piece is there and where its numbers come from):

  * the shelf (``catalogs/shelf.yaml``): eighteen more always-on commercial banners, 31 in
    all, so a placement's eligible set is a realistic shelf rather than a handful of offers
    any order covers;
  * click rates (``ZOO_COMMERCIAL``): a banner nobody needs is clicked at 0.1 %, one that
    matches a full-strength need at 25 %; an unmatched banner fatigues as in the default
    world, a matched one hardly (the customer comes back to it to compare);
  * service messages (``ZOO_SERVICE``, ``ZOO_APPEAL``): read once, then known; the
    overdraft warning repeats the text alert the customer already had (clicked a quarter as
    often as in the default world), so it no longer makes up most of the clicks;
  * conversion after a matched click (``ZOO_CONVERT``): 0.6 x the need's strength;
  * life events (``ZOO_LIFE_EVENTS``): the default ones twice as often (``ZOO_HAZARD``),
    needs for the shelf's insurance and account products that never show in browsing
    (there are no pages for them), a yearly car and home insurance renewal, and every need
    met elsewhere with a daily hazard once ripe (``COMPETITOR``): an offer shown late is
    worth nothing;

  then each world changes one thing of its own:

  ``shelf``            nothing else: the zoo's reference point;
  ``wrong_priors``     the catalog's priorities and click priors favour offers customers
                       ignore, and under-rate offers they like;
  ``phantom_research`` people research topics without any need (a friend's mortgage);
  ``hidden_needs``     needs barely show in browsing;
  ``early_research``   big-ticket needs are researched weeks before they are ripe, then
                       browsed little when they are;
  ``generic_service``  service messages eligible for nearly everyone, relevant only for
                       some customers at some times;
  ``new_offer``        a strong offer launches on day 16 with no history;
  ``heavy_users``      a heavy tail of customers who visit many times a day;
  ``age_appeal``       one offer whose appeal differs sharply by age group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import msgspec

from nextbest.catalog.compile import compile_catalog
from nextbest.catalog.compiled import Catalog
from nextbest.errors import CatalogError
from nextbest.sim.needs import LIFE_EVENTS, LifeEventKind, LifeEvents, NeedSpec
from nextbest.sim.population import PopulationParams
from nextbest.sim.response import (
    KindParams,
    OfferAppeal,
    RateParams,
    ResponseModel,
    ResponseParams,
    load_params,
)
from nextbest.store.catalog_files import catalog_digest, load_catalog, read_sources

__all__ = [
    "CATALOGS",
    "COMPETITOR",
    "DEFAULT_WORLD",
    "WORLDS",
    "ZOO_APPEAL",
    "ZOO_COMMERCIAL",
    "ZOO_CONVERT",
    "ZOO_HAZARD",
    "ZOO_LIFE_EVENTS",
    "ZOO_SERVICE",
    "OfferChange",
    "World",
    "world_catalog",
    "world_named",
    "world_response",
]

#: the catalog overlays worlds add to the bank's catalog
CATALOGS = Path(__file__).with_name("catalogs")
DEFAULT_WORLD = "default"
#: (offer id, field, new value): a change a world makes to one of the bank's offers
OfferChange = tuple[str, str, Any]
#: zoo worlds' commercial click parameters (docs/worlds.md): a banner nobody needs is
#: clicked at 0.1 %, a full-strength need adds 25 %; unmatched banners fatigue as in the
#: default world, a banner that matches a need fades far less (the customer comes back to it)
ZOO_COMMERCIAL = KindParams(
    base=0.001,
    match_gain=0.25,
    fatigue_decay=0.75,
    fatigue_floor=0.15,
    matched_fatigue_decay=0.95,
    matched_fatigue_floor=0.6,
)
#: zoo worlds' service messages: as relevant as in the default world, but read once and then
#: known (the fatigue bites after the first impressions)
ZOO_SERVICE = KindParams(base=0.002, match_gain=0.25, fatigue_decay=0.5, fatigue_floor=0.05)
#: zoo worlds' conversion after a click (the KPI is starting an application): a matched click
#: at need strength s starts one with chance 0.6 s (times the topic's factor)
ZOO_CONVERT = RateParams(base=0.002, gain=0.6, exponent=1.0)
#: zoo worlds' appeal of single offers: the overdraft warning repeats the text alert the
#: customer already had, so it is clicked far less than in the default world
ZOO_APPEAL = (OfferAppeal(offer="overdraft_warning", factor=0.25),)


class World(msgspec.Struct, frozen=True, kw_only=True):
    """One synthetic bank: what differs from the default world, nothing else."""

    name: str
    summary: str
    #: overlay files under ``CATALOGS`` added to the bank's catalog, in order
    overlays: tuple[str, ...] = ()
    #: changes to the bank's offers (the catalog's beliefs, not the customers')
    offer_changes: tuple[OfferChange, ...] = ()
    #: (offer id, simulation day it goes live)
    launches: tuple[tuple[str, int], ...] = ()
    #: what customers think of single offers, beyond their topic
    appeal: tuple[OfferAppeal, ...] = ()
    #: commercial offers' click parameters; None: the response file's
    commercial: KindParams | None = None
    #: service messages' click parameters; None: the response file's
    service: KindParams | None = None
    #: conversion after a click; None: the response file's
    convert: RateParams | None = None
    life_events: LifeEvents | None = None
    population: PopulationParams | None = None
    need_rate: float = 1.0

    @property
    def changes_catalog(self) -> bool:
        return bool(self.overlays or self.offer_changes or self.launches)


# ------------------------------------------------------------------ life-event tables
#: daily hazard, once a need is ripe, that another provider meets it (docs/worlds.md)
COMPETITOR: dict[str, float] = {
    "mortgage": 0.03,
    "car_loan": 0.08,
    "personal_loan": 0.05,
    "cards": 0.05,
    "travel_insurance": 0.1,
    "home_insurance": 0.05,
    "savings": 0.04,
    "investing": 0.03,
    "pension": 0.01,
    "child_savings": 0.02,
    "payments": 0.01,
    "life_insurance": 0.03,
    "car_insurance": 0.1,
    "travel_money": 0.1,
    "premium_account": 0.02,
}


def _reshaped(keep: Callable[[NeedSpec], NeedSpec], events: LifeEvents) -> LifeEvents:
    """``events`` with every need spec passed through ``keep``."""
    return {
        kind: (hazard, tuple(keep(spec) for spec in specs))
        for kind, (hazard, specs) in events.items()
    }


def _competed(spec: NeedSpec) -> NeedSpec:
    hazard = COMPETITOR.get(spec.topic, 0.0) if spec.real else 0.0
    return msgspec.structs.replace(spec, competitor=hazard)


#: needs for the shelf's products (``catalogs/shelf.yaml``), which the site has no pages for:
#: they never show in browsing; the bank hears of some of the life events behind them
_SHELF_NEEDS: dict[LifeEventKind, tuple[NeedSpec, ...]] = {
    LifeEventKind.MOVING: (NeedSpec("life_insurance", 0.3, (0.3, 0.7), (3, 14), (20, 60), 0.5),),
    LifeEventKind.BIRTH: (NeedSpec("life_insurance", 0.5, (0.4, 0.8), (7, 30), (30, 90), 0.5),),
    LifeEventKind.CAR_TROUBLE: (NeedSpec("car_insurance", 0.6, (0.5, 0.9), (1, 5), (7, 21), 0.7),),
    LifeEventKind.TRAVEL_PLANNING: (
        NeedSpec("travel_money", 0.4, (0.3, 0.7), (1, 7), (7, 21), 0.6),
    ),
    LifeEventKind.NEW_JOB: (NeedSpec("premium_account", 0.15, (0.2, 0.5), (3, 14), (14, 45), 0.3),),
}
#: the yearly renewal of car and home cover: a few weeks to shop around (never told)
_RENEWAL: LifeEvents = {
    LifeEventKind.INSURANCE_RENEWAL: (
        0.002,
        (
            NeedSpec("car_insurance", 0.6, (0.4, 0.9), (1, 5), (14, 30), 0.7),
            NeedSpec("home_insurance", 0.3, (0.3, 0.7), (1, 7), (14, 30), 0.6),
        ),
    )
}


#: the zoo's customers meet the default world's random life events this many times as often
ZOO_HAZARD = 2.0


def _zoo_life_events() -> LifeEvents:
    events: LifeEvents = {
        kind: (
            hazard * ZOO_HAZARD if hazard is not None else None,
            (*specs, *_SHELF_NEEDS.get(kind, ())),
        )
        for kind, (hazard, specs) in LIFE_EVENTS.items()
    }
    return _reshaped(_competed, {**events, **_RENEWAL})


#: the zoo's life events: the default ones, the shelf's needs and insurance renewals, each
#: need met elsewhere at its topic's hazard (``COMPETITOR``)
ZOO_LIFE_EVENTS: LifeEvents = _zoo_life_events()


def _barely_visible(spec: NeedSpec) -> NeedSpec:
    return msgspec.structs.replace(spec, visibility=(0.0, 0.3))


#: big-ticket topics people research long before they are ready to act
_RESEARCHED = frozenset({"mortgage", "car_loan", "personal_loan", "investing", "pension"})


def _researched_early(spec: NeedSpec) -> NeedSpec:
    if spec.topic not in _RESEARCHED:
        return spec
    return msgspec.structs.replace(spec, lead_days=(14.0, 42.0), visibility=(0.2, 0.5))


def _with(events: LifeEvents, extra: LifeEvents) -> LifeEvents:
    return {**events, **extra}


#: research for someone else or out of curiosity: browsing with no intent at all
_CURIOSITY: LifeEvents = {
    LifeEventKind.CURIOSITY: (
        0.003,
        (
            NeedSpec("mortgage", 0.4, (0.4, 0.9), (1, 5), (7, 30), 0.0, real=False),
            NeedSpec("investing", 0.3, (0.3, 0.8), (1, 5), (7, 30), 0.0, real=False),
            NeedSpec("car_loan", 0.2, (0.3, 0.8), (1, 3), (5, 20), 0.0, real=False),
            NeedSpec("pension", 0.1, (0.3, 0.7), (1, 5), (7, 30), 0.0, real=False),
        ),
    )
}
#: moments a generic service message is relevant (no site pages: never browsed)
_SERVICE_MOMENTS: LifeEvents = {
    LifeEventKind.BUDGET_SQUEEZE: (
        0.003,
        (NeedSpec("budgeting", 1.0, (0.4, 1.0), (0, 2), (7, 21), 0.0),),
    ),
    LifeEventKind.TAX_DEADLINE: (
        0.002,
        (NeedSpec("tax", 1.0, (0.5, 1.0), (0, 3), (5, 20), 0.0),),
    ),
}

_SHELF = ("shelf.yaml",)


def _zoo(**fields: Any) -> World:
    """A zoo world: the shelf (plus any overlays of its own), the zoo's click and conversion
    rates, its offer appeal and life events (with competitors), then the world's own."""
    overlays = fields.pop("overlays", ())
    appeal = fields.pop("appeal", ())
    fields.setdefault("life_events", ZOO_LIFE_EVENTS)
    return World(
        overlays=(*_SHELF, *overlays),
        commercial=ZOO_COMMERCIAL,
        service=ZOO_SERVICE,
        convert=ZOO_CONVERT,
        appeal=(*ZOO_APPEAL, *appeal),
        **fields,
    )


WORLDS: dict[str, World] = {
    w.name: w
    for w in (
        World(name="default", summary="today's world, unchanged (the bank's catalog as given)"),
        _zoo(
            name="shelf",
            summary="the zoo's base and nothing else (a shelf of 31 commercial banners, "
            "needs met elsewhere, milder fatigue for matched banners): the reference point",
        ),
        _zoo(
            name="wrong_priors",
            summary="the catalog's priorities and click priors favour banners customers "
            "ignore and under-rate the ones they like",
            offer_changes=(
                ("mortgage_rates", "priority", 10),
                ("mortgage_rates", "prior_ctr", 0.03),
                ("pension_calculator", "priority", 8),
                ("pension_calculator", "prior_ctr", 0.02),
                ("home_insurance_offer", "priority", 5),
                ("savings_offer", "prior_ctr", 0.002),
            ),
            appeal=(
                OfferAppeal(offer="mortgage_rates", factor=0.3),
                OfferAppeal(offer="pension_calculator", factor=0.3),
                OfferAppeal(offer="home_insurance_offer", factor=0.5),
                OfferAppeal(offer="savings_offer", factor=3.0),
                OfferAppeal(offer="travel_insurance_offer", factor=2.5),
                OfferAppeal(offer="credit_card_offer", factor=2.0),
            ),
        ),
        _zoo(
            name="phantom_research",
            summary="people research mortgages, funds, cars and pensions with no need "
            "of their own (a friend's mortgage, curiosity)",
            life_events=_with(ZOO_LIFE_EVENTS, _CURIOSITY),
        ),
        _zoo(
            name="hidden_needs",
            summary="needs barely show in browsing (0-30 % of their strength)",
            life_events=_reshaped(_barely_visible, ZOO_LIFE_EVENTS),
        ),
        _zoo(
            name="early_research",
            summary="big-ticket needs are researched 2-6 weeks before they are ripe, "
            "then browsed little",
            life_events=_reshaped(_researched_early, ZOO_LIFE_EVENTS),
        ),
        _zoo(
            name="generic_service",
            summary="a budget coach, a tax reminder and a pension check-up, eligible "
            "for nearly everyone, relevant only now and then",
            overlays=("generic_service.yaml",),
            life_events=_with(ZOO_LIFE_EVENTS, _SERVICE_MOMENTS),
        ),
        _zoo(
            name="new_offer",
            summary="a market-leading fixed-term deposit launches on day 16, no history",
            overlays=("new_offer.yaml",),
            launches=(("fixed_deposit_launch", 15),),
            appeal=(OfferAppeal(offer="fixed_deposit_launch", factor=3.0),),
        ),
        _zoo(
            name="heavy_users",
            summary="a heavy tail of daily users (up to 20 visits a day) meets the same "
            "placements many times a day",
            population=PopulationParams(sessions_sigma=1.3, max_sessions_per_week=140.0),
        ),
        _zoo(
            name="age_appeal",
            summary="the app-based investing offer appeals to the under-35s, hardly to "
            "the over-60s",
            appeal=(
                OfferAppeal(offer="investing_start", factor=4.0, min_age=18, max_age=34),
                OfferAppeal(offer="investing_start", factor=0.25, min_age=60),
            ),
        ),
    )
}


def world_named(name: str) -> World:
    """The world called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return WORLDS[name]
    except KeyError:
        known = ", ".join(WORLDS)
        raise ValueError(f"unknown world {name!r}; use one of {known}") from None


# ------------------------------------------------------------------ catalog and response
def world_catalog(world: World, base: str | Path, start: date) -> Catalog:
    """The bank's catalog at ``base`` as this world runs it: its overlays added, its offer
    changes made, its launches dated from ``start``. ``default``: ``base`` as it is."""
    if not world.changes_catalog:
        return load_catalog(base)
    raw, smap, problems = read_sources(Path(base))
    if problems:
        raise CatalogError(problems)
    digest = hashlib.sha256(catalog_digest(Path(base)).encode())
    for name in world.overlays:
        extra, _, extra_problems = read_sources(CATALOGS / name)
        if extra_problems:
            raise CatalogError(extra_problems)
        for key, items in extra.items():
            raw.setdefault(key, []).extend(items)
        digest.update(catalog_digest(CATALOGS / name).encode())
    changes = [*world.offer_changes, *_launch_changes(world, start)]
    _change_offers(raw, changes, str(base))
    digest.update(repr((world.name, changes)).encode())
    source = f"{base} + world {world.name}"
    return compile_catalog(raw, smap, digest=digest.hexdigest(), source=source)


def _launch_changes(world: World, start: date) -> list[OfferChange]:
    return [
        (offer, "valid_from", (start + timedelta(days=day)).isoformat())
        for offer, day in world.launches
    ]


def _change_offers(raw: dict[str, Any], changes: list[OfferChange], source: str) -> None:
    offers = {o.get("id"): o for o in raw.get("offers", []) if isinstance(o, dict)}
    for offer, field, value in changes:
        if offer not in offers:
            raise ValueError(f"{source}: the world changes offer {offer!r}, which it lacks")
        offers[offer][field] = value


def world_response(world: World, params: ResponseParams | None = None) -> ResponseModel:
    """The response model of this world: ``params`` (the packaged ones by default) with
    the world's commercial click rates and offer appeal."""
    params = params or load_params()
    if world.commercial is not None:
        click = msgspec.structs.replace(params.click, commercial=world.commercial)
        params = msgspec.structs.replace(params, click=click)
    if world.service is not None:
        click = msgspec.structs.replace(params.click, service=world.service)
        params = msgspec.structs.replace(params, click=click)
    if world.convert is not None:
        params = msgspec.structs.replace(params, convert=world.convert)
    if world.appeal:
        click = msgspec.structs.replace(params.click, offers=(*params.click.offers, *world.appeal))
        params = msgspec.structs.replace(params, click=click)
    return ResponseModel(params)
