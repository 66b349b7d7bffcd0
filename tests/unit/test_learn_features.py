"""Customer features: keys, values, sparsity, and the hour-of-week bucket."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.decide.pipeline import without_behaviour
from nextbest.learn.features import customer_features, hour_of_week
from nextbest.profile.interest import decayed
from nextbest.profile.model import FunnelStage, Profile, Session, TopicInterest
from nextbest.profile.topics import TopicSpec

T0 = 1_790_157_600.0  # 2026-09-23T10:00:00Z, a Wednesday
DAY = 86_400.0
TOPICS = {
    "mortgage": TopicSpec(id="mortgage", name="Mortgage", half_life_days=14.0),
    "pension": TopicSpec(id="pension", name="Pension", half_life_days=30.0),
}


def interest(hits: list[float], score: float) -> TopicInterest:
    return TopicInterest(
        score=score,
        score_at=hits[-1],
        hits=hits,
        total=len(hits),
        first_seen=hits[0],
        last_seen=hits[-1],
    )


def rich_profile() -> Profile:
    mortgage_hits = [T0 - 10 * DAY, T0 - 9 * DAY, T0 - 2 * DAY, T0 - 1 * DAY, T0 - 3600]
    return Profile(
        customer_id="c1",
        interests={
            "mortgage": interest(mortgage_hits, 4.0),
            "pension": interest([T0 - 20 * DAY], 1.0),
            "gone": interest([T0 - DAY], 1.0),  # no longer in the catalog
            "never": TopicInterest(),
        },
        funnel={"mortgage": FunnelStage.CONSIDERING, "gone": FunnelStage.APPLYING},
        products=["Checking", "Credit_Card"],
        traits={"age": 41},
        session=Session(started=T0, last_seen=T0, channel="app"),
    )


def test_empty_profile_is_sparse():
    x = customer_features(Profile(customer_id="c0"), TOPICS, T0, {})
    assert x == {"bias": 1.0, "lifecycle:unknown": 1.0, "how:wd1": 1.0}


def test_topic_features_values():
    p = rich_profile()
    x = customer_features(p, TOPICS, T0, {"device": {"type": "Mobile"}}, segments=["vip"])
    score = decayed(4.0, T0 - 3600, T0, TOPICS["mortgage"].half_life)
    assert x["interest:mortgage"] == math.log1p(score)
    assert x["count7:mortgage"] == math.log1p(3)
    assert x["count30:mortgage"] == math.log1p(5)
    assert x["trend:mortgage"] == math.log(4 / 3)  # 3 hits this week, 2 the week before
    assert x["funnel:mortgage"] == FunnelStage.CONSIDERING / 5
    # pension: one hit 20 days ago: no 7-day count, a 30-day count, falling trend absent
    assert "count7:pension" not in x
    assert x["count30:pension"] == math.log1p(1)
    assert "trend:pension" not in x
    assert not any(k.endswith(":gone") or k.endswith(":never") for k in x)
    assert x["product:checking"] == x["product:credit_card"] == 1.0
    assert x["segment:vip"] == 1.0
    assert x["lifecycle:family"] == 1.0
    assert x["age:40"] == 1.0  # 41: the forties
    assert [k for k in x if k.startswith("age:")] == ["age:40"]
    assert "age:90" in customer_features(Profile(customer_id="c", traits={"age": 97}), {}, T0, {})
    assert x["device:mobile"] == 1.0
    assert x["channel:app"] == 1.0  # from the session when the context has none
    assert x["how:wd1"] == 1.0


def test_context_channel_and_plain_device_win():
    x = customer_features(rich_profile(), TOPICS, T0, {"channel": "web", "device": "tablet"})
    assert x["channel:web"] == 1.0
    assert "channel:app" not in x
    assert x["device:tablet"] == 1.0


def test_client_invented_device_and_channel_names_are_other():
    for i in range(3):
        context = {"channel": f"Evil{i}", "device": {"type": f"x{i}&topic:mortgage"}}
        x = customer_features(rich_profile(), TOPICS, T0, context)
        assert x["device:other"] == x["channel:other"] == 1.0
        assert not any(k.startswith(("device:x", "channel:evil")) for k in x)
    ios = customer_features(rich_profile(), TOPICS, T0, {"device": {"type": "iOS"}})
    assert ios["device:ios"] == 1.0


def test_given_lifecycle_is_used():
    x = customer_features(rich_profile(), TOPICS, T0, {}, lifecycle="retired")
    assert x["lifecycle:retired"] == 1.0
    assert "lifecycle:family" not in x


def test_without_personalization_no_behaviour_is_used():
    x = customer_features(without_behaviour(rich_profile()), TOPICS, T0, {})
    assert not any(k.split(":")[0] in ("interest", "count7", "count30", "trend") for k in x)
    assert x["funnel:mortgage"] == FunnelStage.CONSIDERING / 5  # funnel is not behaviour


def test_features_are_plain_floats_and_input_untouched():
    p = rich_profile()
    before = p.interests["mortgage"].hits[:]
    x = customer_features(p, TOPICS, T0, {})
    assert all(type(v) is float for v in x.values())
    assert p.interests["mortgage"].hits == before


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4e9), st.sampled_from([0.0, 3600.0, -5 * 3600.0]))
def test_hour_of_week_matches_datetime(now: float, offset: float):
    moment = datetime.fromtimestamp(now + offset, UTC)
    day = "we" if moment.weekday() >= 5 else "wd"
    assert hour_of_week(now, offset) == f"{day}{moment.hour // 6}"


def test_horizons_recency_page_overdraft_and_life_events():
    p = rich_profile()
    p.overdrawn = True
    p.life_events = [(T0 - 3 * DAY, "moving"), (T0 - 200 * DAY, "birth"), (T0 - DAY, "x&topic:y")]
    x = customer_features(p, TOPICS, T0, {}, page_topics=["mortgage", "unknown"])
    # mortgage: hits exactly an hour and a day ago, windows (now - span, now]: the hour is
    # empty, the day holds the hour-old hit
    assert "count1h:mortgage" not in x
    assert x["count1d:mortgage"] == math.log1p(1)
    p.interests["mortgage"].hits.append(T0 - 60)
    assert customer_features(p, TOPICS, T0, {})["count1h:mortgage"] == math.log1p(1)
    assert x["recency:mortgage"] == 1.0 / (1.0 + 3600 / DAY)
    assert x["recency:pension"] == 1.0 / 21.0
    assert "count1d:pension" not in x
    assert x["page:mortgage"] == 1.0
    assert "page:unknown" not in x  # not a catalog topic
    assert x["overdrawn"] == 1.0
    assert x["life:moving"] == math.exp(-3 / 30)
    assert "life:birth" not in x  # past 90 days
    assert x["life:other"] == math.exp(-1 / 30)  # a client cannot grow the vocabulary


def test_offer_history_features():
    from nextbest.learn.features import HISTORY_FEATURES, offer_history
    from nextbest.profile.model import OfferHistory

    assert offer_history(None, T0) == {}
    assert offer_history(OfferHistory(), T0) == {}
    shown = [T0 - 20 * DAY, T0 - 3 * DAY, T0 - DAY]
    h = OfferHistory(impressions=shown, total_impressions=5, clicks=[T0 - 20 * DAY])
    h.total_clicks = 1
    x = offer_history(h, T0, interest=0.5)
    assert x == {
        "seen": math.log1p(5),  # the total, beyond the kept times
        "since": 0.5,  # a day since the last impression
        "seen7": math.log1p(2),
        "clicked": 1.0,
        "seen_interest": math.log1p(5) * 0.5,
    }
    assert set(x) <= set(HISTORY_FEATURES)
    # no interest in the offer's topic, nothing shown this week, never clicked
    old = OfferHistory(impressions=[T0 - 10 * DAY], total_impressions=1)
    assert offer_history(old, T0) == {"seen": math.log1p(1), "since": 1.0 / 11.0}
