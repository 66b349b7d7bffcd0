"""Whose feedback teaches the shared click model. Pure.

Every feedback event that answers a decision of its customer is stored and folded into that
customer's profile (their own history: impressions, clicks, caps). Only trusted feedback
also teaches the model every customer is ranked by. Feedback is **not** learned when:

- **the caller forced the decision**: ``exclude`` removed candidates and left no more than
  the decision showed, so the model chose nothing (a page may exclude what other placements
  show; it may not pick the answer);
- **the device has no history**: an anonymous device with fewer than ``MIN_DEVICE_EVENTS``
  events other than feedback before it (made-up devices cost an attacker nothing; a known
  customer, or a device with a few page views behind it, counts fully);
- **the volume is anomalous**: the customer's profile holds more than ``MAX_CLICKS_PER_HOUR``
  clicks in the hour before the feedback (no person clicks banners that fast); or the key
  that sent it, or its network origin as the bank's edge reported it, sent more feedback in
  the last hour than its bound (``learn.volume``: at most ``per_origin_hour`` from one IPv4
  /24 or IPv6 /48; a key past a floor and several times its own usual volume). Both are
  written on the stored event by the server (``Event.key_id``, ``Event.origin``), never taken
  from what a browser sends, and counted by the learner's ``FeedbackVolume`` for every
  feedback event, learned or not.

New anonymous devices are held back until they have history, not *weighted* by it (0.2
after one event, 1 after five, say). A graded weight would be exact under replay too (it
would read only the stored history), but every model kind would need a weighted
``learn_one`` (fractional Beta counts, a scaled SGD step, a weighted likelihood), and it
buys little: a weight above zero for a device with no history lets made-up devices teach
again, a little each, and many of them; at zero below the threshold it is the threshold.

The learner itself adds one rule (``learn.learner``): a click or a dismissal counts only
after a view of the same decision item. A decision's own exploration and propensities are
unaffected; untrusted feedback is simply not a training example. Replays apply the same
rules to the same log, so they stay exact.
"""

from __future__ import annotations

from nextbest.decide.model import Decision
from nextbest.decide.reasons import Suppression
from nextbest.events.model import Event
from nextbest.learn.volume import WITHIN, Verdict
from nextbest.profile.identity import ANON_PREFIX
from nextbest.profile.model import Profile
from nextbest.profile.windows import count_between

__all__ = [
    "MAX_CLICKS_PER_HOUR",
    "MIN_DEVICE_EVENTS",
    "forced",
    "sender_trusted",
    "trusted_feedback",
]

#: events an anonymous device must have sent before its feedback teaches the model
MIN_DEVICE_EVENTS = 5
#: clicks in an hour past which a customer's feedback no longer teaches the model
MAX_CLICKS_PER_HOUR = 20


def forced(decision: Decision) -> bool:
    """The caller's ``exclude`` left the decision no choice: it removed candidates, and no
    more remained than the decision showed."""
    narrowed = any(e.why is Suppression.ON_PAGE for e in decision.excluded)
    return narrowed and len(decision.candidates) <= len(decision.items)


def trusted_feedback(
    profile: Profile | None, event: Event, decision: Decision, volume: Verdict = WITHIN
) -> bool:
    """Whether ``event`` (feedback answering ``decision``, not folded yet) may teach the
    shared model, by the rules above; ``profile`` is the sender's profile before it,
    ``volume`` what ``FeedbackVolume.count`` found for its key and origin."""
    if not volume.trusted or forced(decision):
        return False
    return sender_trusted(profile, event)


def sender_trusted(profile: Profile | None, event: Event) -> bool:
    """The rules of ``trusted_feedback`` that read the sender's profile before ``event``
    (history, clicks in the last hour): what the fold worker holding the profile judges,
    for a model writer that holds none (``nextbest.model_writer``)."""
    if profile is None:
        return False  # nothing known of the sender: a device with no history
    if profile.customer_id.startswith(ANON_PREFIX):
        feedback = sum(
            h.total_impressions + h.total_clicks + h.total_dismissals
            for h in profile.offers.values()
        )
        if profile.event_count - feedback < MIN_DEVICE_EVENTS:
            return False
    now = event.timestamp
    clicks = 0
    for history in profile.offers.values():
        clicks += count_between(history.clicks, now - 3_600.0, now)
        if clicks > MAX_CLICKS_PER_HOUR:
            return False
    return True
