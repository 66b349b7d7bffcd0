"""Account takeovers in the synthetic bank, and the habits the identity-theft guard reads.

Off by default: the synthetic bank's stream is what it always was. With ``TakeoverParams``
(``sim generate --takeovers 0.05``, ``bench/guard.py``) each customer also has, drawn from
generators of their own (seeded by the simulation seed and the customer: the world's own
draws are not shifted):

- **devices**: a browser (the customer's anonymousId, a user agent, a locale) and, for app
  users, a phone (its own anonymousId, ``context.app`` / ``os`` / ``device.model``); every
  message from them carries ``context.timezone`` and ``context.locale`` as analytics.js and
  the mobile SDKs send them (no ``context.ip``: a browser key's is dropped anyway);
- **habits**: most sessions moved near a personal hour of the day, page gaps scaled by a
  personal pace;
- **ordinary surprises**: a session on a new device now and then (a cleared cookie, a new
  browser or phone: it logs in, and is the customer's device from then on), trips abroad (a
  foreign time zone for some days), and errands on the sensitive pages (a new payee, a limit,
  new contact details), at the customer's own rates, some straight after a login;
- **takeovers**: ``share`` of the customers fall victim once, on a day drawn after
  ``warmup_days``, if they have logged in by then: a fraudster on a new device logs in
  (an anonymous login page, then ``identify`` with the victim's userId) and goes to payee,
  limit and contact-details pages. With variety: some are in the victim's time zone, some
  fake the victim's browser or locale, some come at night, some browse first, some go at a
  person's pace.

``TakeoverLife.takeovers`` is the truth (which sessions were fraudsters'): the engine never
sees it.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import msgspec

from nextbest.sim.population import Customer

__all__ = ["Takeover", "TakeoverLife", "TakeoverParams"]

DAY = 86_400.0
#: the interactive messages of one visit are within this of each other (the engine's 30 min)
_GAP = 30 * 60.0

#: (time zone, locale, weight): where the example bank's customers live
HOMES = (
    ("Europe/Copenhagen", "da-DK", 0.35),
    ("Europe/Amsterdam", "nl-NL", 0.25),
    ("Europe/Berlin", "de-DE", 0.2),
    ("Europe/Madrid", "es-ES", 0.12),
    ("Europe/London", "en-GB", 0.08),
)
#: where customers travel
TRIPS = (
    "Europe/Lisbon",
    "Europe/Rome",
    "Europe/Athens",
    "America/New_York",
    "Asia/Bangkok",
    "Africa/Cairo",
    "Europe/Paris",
    "Atlantic/Canary",
)
#: where fraudsters are, and their own locales
FRAUD_PLACES = (
    ("Europe/Bucharest", "ro-RO"),
    ("Africa/Lagos", "en-NG"),
    ("Asia/Manila", "en-PH"),
    ("Europe/Moscow", "ru-RU"),
    ("America/Sao_Paulo", "pt-BR"),
    ("Asia/Kolkata", "en-IN"),
    ("Europe/London", "en-GB"),
)
_BROWSERS = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        0.35,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.5 Safari/605.1.15",
        0.15,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        0.2,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Mobile Safari/537.36",
        0.15,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
        0.1,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0", 0.05),
)
_FRAUD_BROWSERS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
)
_PHONES = (
    ("iOS", "iPhone15,2", 0.45),
    ("iOS", "iPhone14,7", 0.15),
    ("Android", "SM-S918B", 0.2),
    ("Android", "Pixel 7", 0.2),
)
_LIBRARY_WEB = {"name": "analytics.js", "version": "4.1.0"}
_APP = {"name": "Example Bank", "version": "5.2.0", "build": "520"}
#: the sensitive pages and events of the example bank (``examples/bank/security.yaml``)
SENSITIVE = {
    "payee": ("/payees/new", "New payee", "Payee Added"),
    "limit": ("/cards/limits", "Card limits", "Limit Changed"),
    "contact": ("/settings/contact-details", "Contact details", "Contact Details Changed"),
}
_BROWSE = ("/", "/accounts", "/accounts/statements", "/transfers", "/savings")
#: what a fraudster goes for: each kind's share of takeovers (at least one of them)
_FRAUD_KINDS = (("payee", 0.85), ("limit", 0.5), ("contact", 0.45))


class TakeoverParams(msgspec.Struct, frozen=True, kw_only=True):
    """How often the ordinary surprises happen, and how many customers fall victim."""

    #: customers who fall victim to one takeover during the simulation
    share: float = 0.05
    #: no takeover before this day (the guard needs a history to judge by)
    warmup_days: int = 21
    #: sessions on a device the customer never used before
    new_device: float = 0.015
    #: of those, a new browser or phone (a new agent too), rather than a cleared cookie
    new_agent: float = 0.5
    #: trips abroad a year, and how long they last (days)
    trips_per_year: float = 2.5
    trip_days: tuple[int, int] = (3, 14)
    #: errands a month, medians over customers (lognormal spread): a new payee, a limit,
    #: new contact details
    payee_per_month: float = 0.25
    limit_per_month: float = 0.05
    contact_per_month: float = 0.03
    #: sessions moved near the customer's own hour of the day
    habit: float = 0.7
    #: of the takeovers: in the victim's own time zone, at night (00-05 UTC), browsing some
    #: pages first, at a person's pace (not a fast one), faking the victim's browser, and
    #: faking the victim's locale
    same_place: float = 0.35
    night: float = 0.4
    browse_first: float = 0.4
    slow: float = 0.4
    same_browser: float = 0.3
    same_locale: float = 0.3


class Takeover(msgspec.Struct, frozen=True, kw_only=True):
    """One fraudster's session: the truth the bench scores the guard against."""

    user_id: str
    device: str
    started: float
    ended: float
    day: int
    #: what the fraudster did: same_place, night, browse_first, slow, same_browser ...
    traits: list[str]
    kinds: list[str]


def _pick(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    return rng.choices(table, [row[-1] for row in table])[0]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _iso(ts: float) -> str:
    """As ``sim.world.iso``: explicit +00:00 offset, milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class _Device(msgspec.Struct, kw_only=True):
    id: str
    app: bool
    agent: str  # a user agent, or "os|model" for an app


class TakeoverLife:
    """One customer's devices, habits, surprises and (maybe) takeover: ``day`` rewrites the
    day's messages of their ``CustomerSim`` and adds errands and a fraudster's session."""

    def __init__(self, customer: Customer, seed: int, days: int, params: TakeoverParams) -> None:
        self.c = customer
        self.p = params
        self.rng = random.Random(f"guard:{seed}:{customer.index}")
        rng = self.rng
        zone, locale, _ = _pick(rng, HOMES)
        self.zone: str = zone
        self.locale: str = locale
        self.browser = _Device(id=customer.anonymous_id, app=False, agent=_pick(rng, _BROWSERS)[0])
        system, model, _ = _pick(rng, _PHONES)
        self.phone = _Device(id=self._id(), app=True, agent=f"{system}|{model}")
        self.hour = rng.choices(range(24), _HOUR_WEIGHTS)[0]
        self.pace = math.exp(rng.gauss(0.0, 0.35))
        self.rates = {
            "payee": params.payee_per_month * math.exp(rng.gauss(0.0, 0.8)) / 30.0,
            "limit": params.limit_per_month * math.exp(rng.gauss(0.0, 0.8)) / 30.0,
            "contact": params.contact_per_month * math.exp(rng.gauss(0.0, 0.8)) / 30.0,
        }
        self.trips: list[tuple[int, int, str]] = []
        for _ in range(_poisson(rng, params.trips_per_year * days / 365.0)):
            first = rng.randrange(max(days, 1))
            self.trips.append((first, first + rng.randint(*params.trip_days), rng.choice(TRIPS)))
        victim = rng.random() < params.share and days > params.warmup_days
        self.takeover_day = rng.randrange(params.warmup_days, days) if victim else -1
        self.takeovers: list[Takeover] = []
        self.errands = 0
        self.new_devices = 0

    def _id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _place(self, d: int) -> str:
        for first, last, zone in self.trips:
            if first <= d <= last:
                return zone
        return self.zone

    # ------------------------------------------------------------------ context
    def _context(self, device: _Device, zone: str, locale: str) -> dict[str, Any]:
        if device.app:
            system, model = device.agent.split("|")
            return {
                "library": {"name": f"analytics-{system.lower()}", "version": "4.1.8"},
                "app": _APP,
                "os": {"name": system, "version": "17.5" if system == "iOS" else "14"},
                "device": {"type": "mobile", "model": model, "id": device.id},
                "timezone": zone,
                "locale": locale,
            }
        mobile = "Mobile" in device.agent
        return {
            "library": _LIBRARY_WEB,
            "device": {"type": "mobile" if mobile else "desktop"},
            "userAgent": device.agent,
            "timezone": zone,
            "locale": locale,
        }

    # ------------------------------------------------------------------ the day
    def day(
        self, d: int, base: float, out: list[tuple[float, dict[str, Any]]], known: bool
    ) -> None:
        """Rewrite ``out`` (the customer's day, from ``CustomerSim.day``) in place: their
        visits on their devices, at their hours and pace; add errands and the takeover.
        ``known``: the customer has logged in (a userId) by the end of the day."""
        rng = self.rng
        core = [m for m in out if m[1].get("anonymousId") is None]
        visits = _visits([m for m in out if m[1].get("anonymousId") is not None])
        new: list[tuple[float, dict[str, Any]]] = []
        zone = self._place(d)
        for visit in visits:
            new.extend(self._visit(visit, base, zone))
        if known:
            for kind, rate in self.rates.items():
                for _ in range(_poisson(rng, rate)):
                    new.extend(self._errand(kind, base, zone))
            if d == self.takeover_day:
                new.extend(self._takeover(d, base))
        out[:] = core + new

    def _visit(
        self, visit: list[tuple[float, dict[str, Any]]], base: float, zone: str
    ) -> list[tuple[float, dict[str, Any]]]:
        rng = self.rng
        start = visit[0][0]
        moved = start
        if rng.random() < self.p.habit:
            moved = base + (self.hour + rng.uniform(-1.5, 1.5)) * 3600.0
            moved = min(max(moved, base), base + DAY - 3600.0)
        app = visit[0][1]["context"].get("library", {}).get("name") != "analytics.js"
        device, fresh = self._device(app)
        context = self._context(device, zone, self.locale)
        out = []
        for ts, msg in visit:
            at = moved + (ts - start) * self.pace
            out.append(
                (at, {**msg, "timestamp": _iso(at), "anonymousId": device.id, "context": context})
            )
        user = next((m["userId"] for _, m in visit if m.get("userId")), None)
        if fresh and user is not None:  # a new device logs in first
            out[:0] = self._login(device, user, moved - 20.0, context)
        return out

    def _device(self, app: bool) -> tuple[_Device, bool]:
        """The device of a visit, and whether it is new: the usual one, or now and then a
        new one (the usual one from then on)."""
        rng = self.rng
        usual = self.phone if app else self.browser
        if rng.random() >= self.p.new_device:
            return usual, False
        self.new_devices += 1
        agent = usual.agent
        if rng.random() < self.p.new_agent:
            if app:
                system, model, _ = _pick(rng, _PHONES)
                agent = f"{system}|{model}"
            else:
                agent = _pick(rng, _BROWSERS)[0]
        device = _Device(id=self._id(), app=app, agent=agent)
        if app:
            self.phone = device
        else:
            self.browser = device
        return device, True

    def _message(
        self, kind: str, at: float, user: str | None, device: _Device, context: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        return at, {
            "type": kind,
            "messageId": f"{self.rng.getrandbits(128):032x}",
            "timestamp": _iso(at),
            "userId": user,
            "anonymousId": device.id,
            "context": context,
        }

    def _page(
        self,
        at: float,
        user: str | None,
        device: _Device,
        context: dict[str, Any],
        path: str,
        title: str,
    ) -> tuple[float, dict[str, Any]]:
        at, msg = self._message("screen" if device.app else "page", at, user, device, context)
        msg.update(name=title, properties={"url": "https://bank.example" + path, "path": path})
        if not device.app:
            msg["category"] = None
        return at, msg

    def _track(
        self, at: float, user: str, device: _Device, context: dict[str, Any], event: str
    ) -> tuple[float, dict[str, Any]]:
        at, msg = self._message("track", at, user, device, context)
        msg.update(event=event, properties={})
        return at, msg

    def _login(
        self, device: _Device, user: str, at: float, context: dict[str, Any]
    ) -> list[tuple[float, dict[str, Any]]]:
        """The anonymous login page, then ``identify``: how a device comes to be the
        customer's."""
        page = self._page(at, None, device, context, "/login", "Log in")
        at, ident = self._message("identify", at + self.rng.uniform(4, 12), user, device, context)
        ident["traits"] = {}
        return [page, (at, ident)]

    def _errand(self, kind: str, base: float, zone: str) -> list[tuple[float, dict[str, Any]]]:
        """The customer on a sensitive page of theirs: home first or straight there."""
        rng = self.rng
        app = rng.random() < self.c.app_share
        device, fresh = self._device(app)
        at = base + (self.hour + rng.uniform(-2.0, 2.0)) * 3600.0
        at = min(max(at, base + 60.0), base + DAY - 3600.0)
        out: list[tuple[float, dict[str, Any]]] = []
        context = self._context(device, zone, self.locale)
        user = self.c.user_id
        if fresh or rng.random() < 0.3:
            out += self._login(device, user, at - 25.0, context)
        path, title, event = SENSITIVE[kind]
        if rng.random() >= 0.35:  # home first
            home = rng.choice(_BROWSE[:2])
            out.append(self._page(at, user, device, context, home, _title(home)))
            at += rng.uniform(10, 90) * self.pace
        out.append(self._page(at, user, device, context, path, title))
        at += rng.uniform(30, 120) * self.pace
        out.append(self._track(at, user, device, context, event))
        for _ in range(rng.randint(0, 2)):
            at += rng.uniform(10, 90) * self.pace
            other = rng.choice(_BROWSE)
            out.append(self._page(at, user, device, context, other, _title(other)))
        self.errands += 1
        return out

    # ------------------------------------------------------------------ the fraudster
    def _takeover(self, d: int, base: float) -> list[tuple[float, dict[str, Any]]]:
        rng, p, c = self.rng, self.p, self.c
        traits: list[str] = []

        def maybe(share: float, name: str) -> bool:
            if rng.random() < share:
                traits.append(name)
                return True
            return False

        if maybe(p.same_place, "same_place"):
            zone, locale = self.zone, self.locale
        else:
            zone, locale = rng.choice(FRAUD_PLACES)
        if maybe(p.same_locale, "same_locale"):
            locale = self.locale
        app = rng.random() < 0.15
        if app:
            traits.append("app")
            system, model, _ = _pick(rng, _PHONES)
            device = _Device(id=self._id(), app=True, agent=f"{system}|{model}")
        elif maybe(p.same_browser, "same_browser"):
            device = _Device(id=self._id(), app=False, agent=self.browser.agent)
        else:
            device = _Device(id=self._id(), app=False, agent=rng.choice(_FRAUD_BROWSERS))
        if maybe(p.night, "night"):
            at = base + rng.uniform(0.0, 5.0) * 3600.0
        else:
            at = base + rng.uniform(8.0, 22.0) * 3600.0
        slow = maybe(p.slow, "slow")

        def gap() -> float:
            return rng.uniform(10, 90) if slow else rng.uniform(3, 15)

        context = self._context(device, zone, locale)
        out = self._login(device, c.user_id, at, context)
        at = out[-1][0]
        if maybe(p.browse_first, "browse_first"):
            for _ in range(rng.randint(2, 6)):
                at += gap()
                path = rng.choice(_BROWSE)
                out.append(self._page(at, c.user_id, device, context, path, _title(path)))
        kinds = [k for k, share in _FRAUD_KINDS if rng.random() < share]
        if not kinds:
            kinds = ["payee"]
        rng.shuffle(kinds)
        for kind in kinds:
            path, title, event = SENSITIVE[kind]
            at += gap()
            out.append(self._page(at, c.user_id, device, context, path, title))
            at += gap()
            out.append(self._track(at, c.user_id, device, context, event))
        started = out[0][0]
        self.takeovers.append(
            Takeover(
                user_id=c.user_id,
                device=device.id,
                started=started,
                ended=at,
                day=d,
                traits=traits,
                kinds=kinds,
            )
        )
        return out


#: the population's hours of the day (``sim.world``'s), for a customer's own hour
_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 6, 6, 6, 7, 6, 5, 5, 5, 6, 7, 8, 9, 8, 5, 2)


def _title(path: str) -> str:
    return path.strip("/").split("/")[-1].replace("-", " ").title() or "Home"


def _visits(
    messages: list[tuple[float, dict[str, Any]]],
) -> list[list[tuple[float, dict[str, Any]]]]:
    """The day's interactive messages grouped into visits (gaps under 30 minutes)."""
    out: list[list[tuple[float, dict[str, Any]]]] = []
    for m in sorted(messages, key=lambda m: m[0]):
        if out and m[0] - out[-1][-1][0] <= _GAP:
            out[-1].append(m)
        else:
            out.append([m])
    return out
