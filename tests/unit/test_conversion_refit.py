"""The conversion model's fit, throttled (issue #14): a fit per outcome up to
``REFIT_DIVISOR`` outcomes, then one per fiftieth more evidence, done as the outcome is
learned; between fits the pooled prior waits while each offer's own counts move; a function
of the outcomes alone; kept in the learner's snapshot, so that a restored learner predicts
as the live one, and a snapshot from before it was kept is refitted on load."""

from __future__ import annotations

import random
from itertools import pairwise

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.learn.conversion import (
    INTENT_LEVELS,
    NO_INTENT,
    REFIT_DIVISOR,
    ConversionModel,
)
from nextbest.learn.learner import Learner

Outcome = tuple[str, bool, int]


def outcomes(catalog: Catalog, n: int, seed: int) -> list[Outcome]:
    """``n`` seeded outcomes over the catalog's offers: about one in five converted, the
    intent level drawn (one in ten unknown)."""
    rng = random.Random(seed)
    ids = sorted(catalog.offers)
    return [
        (
            rng.choice(ids),
            rng.random() < 0.2,
            NO_INTENT if rng.random() < 0.1 else rng.randrange(INTENT_LEVELS),
        )
        for _ in range(n)
    ]


def predictions(model: ConversionModel, catalog: Catalog) -> list[float]:
    """Every offer's prediction at every intent level, and with the intent unknown."""
    levels = (NO_INTENT, *range(INTENT_LEVELS))
    return [model.predict(o, level) for o in catalog.offers.values() for level in levels]


def test_a_fit_per_outcome_up_to_fifty_then_one_per_fiftieth_of_the_evidence(
    catalog: Catalog,
) -> None:
    model = ConversionModel(20.0, catalog.offers)
    fitted_at: list[int] = []
    for t, outcome in enumerate(outcomes(catalog, 5_000, seed=1), 1):
        before = model.fits
        model.learn(*outcome)
        if model.fits != before:
            fitted_at.append(t)
    assert fitted_at[:REFIT_DIVISOR] == list(range(1, REFIT_DIVISOR + 1))
    for previous, t in pairwise(fitted_at):
        assert (t - previous) * REFIT_DIVISOR >= t  # no sooner than a fiftieth more
        assert (t - previous - 1) * REFIT_DIVISOR < t  # and as soon as one is due
    # 257 fits in all (50 + about 46 x ln(5,000 / 50)), against one per outcome before
    assert model.fits == 257


def test_between_fits_the_pooled_prior_waits_and_the_offers_own_counts_move(
    catalog: Catalog,
) -> None:
    model = ConversionModel(20.0, catalog.offers)
    for outcome in outcomes(catalog, 1_000, seed=2):
        model.learn(*outcome)
    model.fit()
    rates, savings = catalog.offers["mortgage_rates"], catalog.offers["savings_offer"]
    fits, factors = model.fits, list(model.factors())
    pooled = model.pooled(savings, 2)
    own, rate = model.predict(rates, 2), model.rate(rates)
    model.learn("mortgage_rates", True, 2)
    assert model.fits == fits  # one outcome in 1,001: no fit due
    assert model.factors() == factors
    assert model.pooled(savings, 2) == pooled
    assert model.predict(rates, 2) > own  # its own cell moved at once
    assert model.rate(rates) > rate


def test_predictions_depend_on_the_outcomes_alone_not_on_when_they_are_asked(
    catalog: Catalog,
) -> None:
    quiet = ConversionModel(20.0, catalog.offers)
    asked = ConversionModel(20.0, catalog.offers)
    for k, outcome in enumerate(outcomes(catalog, 1_500, seed=3)):
        quiet.learn(*outcome)
        asked.learn(*outcome)
        if k % 7 == 0:
            predictions(asked, catalog)
    assert asked.fitted() == quiet.fitted()
    assert predictions(asked, catalog) == predictions(quiet, catalog)


def test_a_restored_learner_predicts_as_the_live_one_and_goes_on_alike(
    catalog: Catalog,
) -> None:
    live = Learner(catalog)
    history = outcomes(catalog, 1_700, seed=4)
    for outcome in history[:777]:
        live.conversions.learn(*outcome)
    assert live.conversions.fitted().since > 0  # between two fits: the counter matters
    restored = Learner.from_state(catalog, live.to_state())
    assert restored.to_state() == live.to_state()
    assert predictions(restored.conversions, catalog) == predictions(live.conversions, catalog)
    fits = live.conversions.fits, restored.conversions.fits
    for k, outcome in enumerate(history[777:]):
        live.conversions.learn(*outcome)
        restored.conversions.learn(*outcome)
        if k % 10 == 0:
            assert predictions(restored.conversions, catalog) == predictions(
                live.conversions, catalog
            )
    assert live.conversions.fits - fits[0] == restored.conversions.fits - fits[1] > 0
    assert restored.to_state() == live.to_state()


def test_a_snapshot_without_the_fit_loads_and_is_refitted(catalog: Catalog) -> None:
    """A snapshot from before the fit was kept: its model refitted after every outcome, so
    it is fitted on load, from every outcome it counted."""
    live = Learner(catalog)
    for outcome in outcomes(catalog, 640, seed=5):
        live.conversions.learn(*outcome)
    assert live.conversions.fitted().since > 0
    old = msgspec.msgpack.decode(live.to_state())
    del old["conversion_fit"]
    restored = Learner.from_state(catalog, msgspec.msgpack.encode(old))
    assert restored.conversions.counts() == live.conversions.counts()
    assert restored.conversions.intent_counts() == live.conversions.intent_counts()
    live.conversions.fit()  # what the model before the throttle held after its last outcome
    assert restored.conversions.fitted() == live.conversions.fitted()
    assert predictions(restored.conversions, catalog) == predictions(live.conversions, catalog)
    assert restored.to_state() == live.to_state()
