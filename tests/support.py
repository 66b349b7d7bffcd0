"""Helpers for tests: message builders in the exact shape Segment-compatible SDKs send."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from nextbest.decide.model import Decision

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOG = ROOT / "examples" / "bank"
#: 2026-09-23T10:00:00Z, a Wednesday
T0 = 1_790_157_600.0
DAY = 86_400.0

WRITE_KEY = "test-write-key"
BROWSER_KEY = "test-browser-key"
SERVER_KEY = "test-server-key"
ADMIN_KEY = "test-admin-key"
TOKEN_SECRET = "test-token-secret"

_ids = itertools.count(1)


def counter_ids(prefix: str = "d") -> Callable[[], str]:
    """Deterministic decision ids for tests."""
    count = itertools.count(1)
    return lambda: f"{prefix}{next(count):06d}"


def iso(ts: float) -> str:
    """A timestamp as SDKs send it: explicit +00:00 offset, milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def message(
    kind: str, *, at: float = T0, user: str | None = None, anon: str | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": f"msg-{next(_ids)}",
        "timestamp": iso(at),
        "userId": user,
        "anonymousId": anon,
        "context": {"library": {"name": "tests", "version": "1"}},
        **fields,
    }


def page(url: str, **kw: Any) -> dict[str, Any]:
    return message("page", name=None, category=None, properties={"url": url}, **kw)


def track(event: str, properties: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return message("track", event=event, properties=properties or {}, **kw)


def identify(traits: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return message("identify", traits=traits, **kw)


def feedback(
    decision: Decision,
    event: str = "Promotion Viewed",
    offer_id: str | None = None,
    *,
    at: float = T0,
    **who: Any,
) -> dict[str, Any]:
    """``Promotion Viewed / Clicked / Dismissed`` answering ``decision``, as a page that
    rendered it sends: the offer (default: the first item) at the position it was shown
    (no position for an offer the decision did not show), from the customer the decision
    was made for unless ``who`` (``user=``, ``anon=``) says otherwise."""
    from nextbest.profile.identity import ANON_PREFIX

    offer = offer_id or decision.items[0].offer_id
    props: dict[str, Any] = {"promotion_id": offer, "decision_id": decision.decision_id}
    item = next((i for i in decision.items if i.offer_id == offer), None)
    if item is not None:
        props["position"] = item.position
    if not who:
        customer = decision.customer_id
        anon = customer.startswith(ANON_PREFIX)
        who = {"anon": customer[len(ANON_PREFIX) :]} if anon else {"user": customer}
    return track(event, props, at=at, **who)


def batch(*messages: dict[str, Any]) -> bytes:
    return orjson.dumps({"batch": list(messages)})


def user_in(arm: str, salt: str, share: float, prefix: str = "cust") -> str:
    """The first ``prefix-N`` user id the stable hash puts in ``arm`` of campaign ``salt``."""
    from nextbest.experiments import assign

    for n in itertools.count():
        uid = f"{prefix}-{n}"
        if assign(uid, salt, share).value == arm:
            return uid
    raise AssertionError("unreachable")


def treated_everywhere(prefix: str = "cust") -> str:
    """A user in the treatment arm of every example-bank campaign."""
    from nextbest.experiments import assign

    campaigns = {
        "mortgage_q4": 0.1,
        "car_loan_autumn": 0.1,
        "pension_awareness": 0.1,
        "family_savings": 0.1,
        "cards_always_on": 0.05,
    }
    for n in itertools.count():
        uid = f"{prefix}-{n}"
        if all(assign(uid, c, s).value == "treatment" for c, s in campaigns.items()):
            return uid
    raise AssertionError("unreachable")


#: where the example bank's always-on product banners begin (offers.yaml, campaigns.yaml)
ALWAYS_ON_MARKERS = {
    "offers.yaml": "\n  # Always-on product banners",
    "campaigns.yaml": "\n  - id: always_on_products",
}


def targeted_catalog(folder: Path) -> Path:
    """The example bank without its always-on banners and without learning: only the
    targeted offers compete, in the catalog's order, so a test can name exactly what a
    customer sees."""
    return edited_catalog(folder, {}, targeted=True)


#: how the example bank's learning placements explore (placements.yaml)
EXPLORE_BANK = "explore: {type: thompson, n_sim: 200}"
#: the example bank's app_home as it learns there, and as ``bayes_catalog`` makes it learn
APP_HOME_CONTEXTUAL = (
    "  - id: app_home\n    channel: app\n    slots: 2\n"
    "    learning: {model: contextual, explore: {type: thompson, n_sim: 200}}"
)
APP_HOME_BAYES = (
    "  - id: app_home\n    channel: app\n    slots: 2\n"
    "    learning: {model: bayes, explore: {type: thompson, n_sim: 200}}"
)


def bayes_catalog(folder: Path) -> Path:
    """The example bank with its app_home learning by the Beta-Bernoulli model and Thompson
    sampling: a catalog with both model kinds and both ways to explore, for the tests of
    what differs between them."""
    return edited_catalog(folder, {"placements.yaml": [(APP_HOME_CONTEXTUAL, APP_HOME_BAYES)]})


def edited_bank(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the whole example bank in ``tmp_path / "bank"`` with the first ``old``
    replaced by ``new`` in ``file`` (``old`` must be there)."""
    folder = tmp_path / "bank"
    shutil.copytree(EXAMPLE_CATALOG, folder)
    path = folder / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return folder


def edited_catalog(
    folder: Path, edits: dict[str, list[tuple[str, str]]], *, targeted: bool = False
) -> Path:
    """A copy of the example catalog in ``folder`` with text replacements per file
    (``targeted``: without the always-on banners first)."""
    for f in EXAMPLE_CATALOG.glob("*.yaml"):
        text = f.read_text()
        marker = ALWAYS_ON_MARKERS.get(f.name)
        if targeted and marker is not None:
            assert marker in text, (f.name, marker)
            text = text[: text.index(marker)] + "\n"
        if targeted and f.name == "placements.yaml":  # greedy: no learning, no exploration
            text = "\n".join(ln for ln in text.splitlines() if "learning:" not in ln) + "\n"
        for old, new in edits.get(f.name, []):
            assert old in text, (f.name, old)
            text = text.replace(old, new)
        (folder / f.name).write_text(text)
    return folder
