"""Settings, read once into a frozen Struct: nothing sees two values of one setting.

Keys are secrets: ``repr`` masks them and nothing logs them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import msgspec

from nextbest.clock import ClockKind
from nextbest.errors import ConfigError

__all__ = ["DEV_KEYS", "Settings", "Webhook", "origin", "webhooks_from_env", "without_password"]

#: Keys ``make run`` uses when none are configured. Never for production; ``serve`` warns.
DEV_KEYS = {
    "write": "dev-write-key",
    "browser": "dev-browser-key",
    "server": "dev-server-key",
    "admin": "dev-admin-key",
    "token_secret": "dev-token-secret",
    "advisor_token_secret": "dev-advisor-token-secret",
}


def _keys(value: str | None) -> frozenset[str]:
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


_PASSWORD = re.compile(r"^(?P<head>[a-z][a-z0-9+.\-]*://[^/@:]*):[^/]*@", re.I)
_PASSWORD_PARAM = re.compile(r"(?P<head>[?&]password=)[^&]*", re.I)


def without_password(url: str) -> str:
    """``url`` (a ``data`` setting such as ``postgresql://user:secret@host/db``) with its
    password shown as ``***``: safe to print or log."""
    return _PASSWORD_PARAM.sub(r"\g<head>***", _PASSWORD.sub(r"\g<head>:***@", url))


_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[a-z0-9.\-\[\]:]+?)(?::(?P<port>[0-9]{1,5}))?")
#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_DEFAULT_PORT = {"http": "80", "https": "443"}


def origin(value: str) -> str:
    """A web origin as browsers send it in ``Origin`` (lowercase, no default port, no
    path), or ``*``; ConfigError for anything else."""
    text = value.strip().lower().rstrip("/")
    if text == "*":
        return text
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"CORS origin {value!r} is not an origin: write scheme://host[:port], "
            "as in https://www.bank.example (no path), or *"
        )
    port = match["port"]
    if port is None or port == _DEFAULT_PORT[match["scheme"]]:
        return f"{match['scheme']}://{match['host']}"
    return f"{match['scheme']}://{match['host']}:{port}"


#: the shortest webhook secret accepted: 128 bits of a random hex or base64 string
WEBHOOK_SECRET_MIN = 16
_WEBHOOK_ENV = re.compile(
    r"NEXTBEST_WEBHOOK_(?P<name>[A-Z0-9]+(?:_[A-Z0-9]+)*)_(?P<part>URL|SECRET|TIMEOUT)"
)


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook the outbox delivers to (``nextbest.channels``): ``NEXTBEST_WEBHOOK_<NAME>_URL``
    and ``..._SECRET`` (the HMAC key its receiver verifies signatures with), optionally
    ``..._TIMEOUT`` (seconds an attempt may take). ``name`` is ``<NAME>`` in lowercase
    (``telephony``): the destination an outbox message names. ``repr`` masks the secret and
    the URL's password; nothing logs either."""

    name: str
    url: str
    secret: str
    timeout: float = 10.0

    def __repr__(self) -> str:
        return (
            f"Webhook(name={self.name!r}, url={without_password(self.url)!r}, secret=<secret>, "
            f"timeout={self.timeout!r})"
        )

    __str__ = __repr__


def webhooks_from_env(env: Mapping[str, str]) -> tuple[Webhook, ...]:
    """Every ``NEXTBEST_WEBHOOK_<NAME>_URL`` with its secret (and timeout), by name; a URL
    without a secret (or the reverse), a URL that is not http(s), a secret shorter than
    ``WEBHOOK_SECRET_MIN`` or a bad timeout is a ConfigError naming the variable, never its
    value."""
    parts: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        match = _WEBHOOK_ENV.fullmatch(key)
        if match is not None:
            parts.setdefault(match["name"], {})[match["part"]] = value
    found: list[Webhook] = []
    for name, given in sorted(parts.items()):
        var = f"NEXTBEST_WEBHOOK_{name}"
        if "URL" not in given or "SECRET" not in given:
            raise ConfigError(f"a webhook needs both {var}_URL and {var}_SECRET")
        url, secret = given["URL"].strip(), given["SECRET"].strip()
        if not re.match(r"https?://[^/\s]+", url, re.I):
            raise ConfigError(f"{var}_URL is an http:// or https:// URL")
        if len(secret) < WEBHOOK_SECRET_MIN:
            raise ConfigError(
                f"{var}_SECRET is too short: at least {WEBHOOK_SECRET_MIN} characters "
                "(a random string, e.g. `openssl rand -hex 32`)"
            )
        timeout = 10.0
        if "TIMEOUT" in given:
            try:
                timeout = float(given["TIMEOUT"])
            except ValueError:
                timeout = math.nan
            if not 0 < timeout <= 300:
                raise ConfigError(f"{var}_TIMEOUT is seconds, more than 0 and at most 300")
        found.append(Webhook(name=name.lower(), url=url, secret=secret, timeout=timeout))
    return tuple(found)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    catalog: str = "examples/bank"
    data: str = ".nextbest/embedded.sqlite"
    #: where live derived state (profiles, identity links, models) is kept, if not with the
    #: logs in ``data``: ``redis://host:port/db`` (``NEXTBEST_PROFILES``); empty: in ``data``
    profiles: str = ""
    #: the bus between stateless API workers and the fold worker (``serve --role api|fold``):
    #: ``nats://host:port/STREAM`` (``NEXTBEST_BUS``); empty: none (the embedded engine)
    bus: str = ""
    #: the stream's partitions (``NEXTBEST_BUS_PARTITIONS``): fixed when the stream is made
    bus_partitions: int = 16
    #: the partitions a fold worker owns (``NEXTBEST_FOLD_PARTITIONS``, ``serve --role fold
    #: --partitions 0-7``): several fold workers share the bus; empty: one owns them all
    fold_partitions: str = ""
    #: profiles and links such a fold worker keeps in memory at most (``NEXTBEST_FOLD_CACHE``,
    #: entries; the rest is read from Redis when an event needs it)
    fold_cache: int = 100_000
    #: a partitioned fold worker's name as the owner of its partitions' leases
    #: (``NEXTBEST_FOLD_NAME``; empty: host, pid and a random part, so a restarted worker
    #: waits for its predecessor's leases to expire; a stable name, such as a pod's, takes
    #: them back at once: never give two running workers the same name)
    fold_name: str = ""
    #: seconds a partition's lease lasts unless renewed (``NEXTBEST_FOLD_LEASE_SECONDS``):
    #: how long a dead worker's partitions wait before another worker takes them over
    fold_lease_seconds: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8000
    write_keys: frozenset[str] = frozenset()
    browser_keys: frozenset[str] = frozenset()
    server_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()
    #: keys of the monitoring system that scrapes ``/metrics`` (and may do nothing else;
    #: admin keys reach it too)
    metrics_keys: frozenset[str] = frozenset()
    token_secret: str = ""
    #: the secret advisor tokens are signed with (``api.advisor_token``): the contact
    #: centre's backend mints them; empty: no advisor key is accepted (server and admin keys
    #: still act for advisors)
    advisor_token_secret: str = ""
    #: how often the callback timers are swept (offers that lapse, slots that come, "call me
    #: now" past its SLA), in seconds; 0: never by the server (whoever drives time calls
    #: ``CallbackDesk.sweep``, as a simulation on event time does)
    callback_sweep_seconds: float = 1.0
    max_body_bytes: int = 4_500_000
    #: a body that carries its own key (analytics.js: ``writeKey`` in a text/plain body) is
    #: authenticated before anything else is read from it: it may be at most this large,
    #: compressed and inflated (analytics.js sends at most 500 KB)
    browser_body_bytes: int = 512_000
    #: requests a second per key (0: no limit) and the burst a key may send at once: per
    #: process, far above what one process serves
    key_rate: float = 10_000.0
    key_burst: int = 20_000
    #: requests a second per browser session (the user a customer token binds, else each
    #: anonymousId) on a browser key, and the burst: a page that loads five placements and
    #: reports what it showed sends about 15
    session_rate: float = 10.0
    session_burst: int = 100
    #: browser sessions whose rate is tracked at once (least recently seen forgotten first)
    rate_sessions_max: int = 100_000
    #: origins whose pages may call the browser routes (CORS); ``*`` for any. Empty: no CORS
    #: headers; otherwise a request from another origin is refused (403)
    cors_origins: frozenset[str] = frozenset()
    #: ``Access-Control-Allow-Credentials: true`` (never with ``*``)
    cors_credentials: bool = False
    #: how long a browser may cache a preflight answer (seconds)
    cors_max_age: int = 600
    sqlite_synchronous: str = "FULL"
    snapshot_every: int = 50_000
    decision_flush_every: int = 10_000
    #: ``wall`` (production) or ``event``: now is the latest accepted event timestamp
    #: (replays, backfills, simulations)
    clock: ClockKind = ClockKind.WALL
    #: the request header in which the bank's edge reports the client's address (its last
    #: comma-separated value: what the edge itself appended to an ``X-Forwarded-For``);
    #: empty: the socket's peer. Only the edge may set it: a client's own value must be
    #: overwritten there, or a page could say it is anywhere
    origin_header: str = ""
    #: how much of an address names its network origin (``guard.origin``)
    origin_prefix_v4: int = 24
    origin_prefix_v6: int = 48
    #: the webhooks the outbox delivers to (``NEXTBEST_WEBHOOK_<NAME>_URL`` ...), by name
    webhooks: tuple[Webhook, ...] = ()
    #: customer token secrets still accepted, besides ``token_secret`` which signs
    #: (``NEXTBEST_TOKEN_SECRETS_OLD``, comma-separated): rotation (``api.customer_token``)
    token_secrets_old: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for value in self.cors_origins:
            if origin(value) != value:
                raise ConfigError(f"CORS origin {value!r} must be written {origin(value)!r}")
        if "*" in self.cors_origins and self.cors_credentials:
            raise ConfigError(
                "NEXTBEST_CORS_ORIGINS=* cannot go with NEXTBEST_CORS_CREDENTIALS: "
                "name the origins that may send credentials"
            )
        if not 0 <= self.callback_sweep_seconds <= 3_600:
            raise ConfigError("NEXTBEST_CALLBACK_SWEEP_SECONDS is 0 (off) to 3600 seconds")
        if not all(0 <= r < math.inf for r in (self.key_rate, self.session_rate)):
            raise ConfigError(
                "a rate (NEXTBEST_KEY_RATE, NEXTBEST_SESSION_RATE) is a finite number >= 0"
            )
        if not (8 <= self.origin_prefix_v4 <= 32 and 16 <= self.origin_prefix_v6 <= 128):
            raise ConfigError(
                "NEXTBEST_ORIGIN_PREFIX_V4 is 8 to 32 and NEXTBEST_ORIGIN_PREFIX_V6 16 to 128"
            )
        if not 1 <= self.bus_partitions <= 4_096:
            raise ConfigError("NEXTBEST_BUS_PARTITIONS is 1 to 4096")
        if self.fold_cache < 1:
            raise ConfigError("NEXTBEST_FOLD_CACHE is at least 1 (profiles and links)")
        if not 0.3 <= self.fold_lease_seconds <= 600:
            raise ConfigError("NEXTBEST_FOLD_LEASE_SECONDS is 0.3 to 600")
        header = self.origin_header
        if header and not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"NEXTBEST_ORIGIN_HEADER is not a header name: {header!r}")
        if min(self.key_burst, self.session_burst, self.rate_sessions_max) < 1:
            raise ConfigError(
                "NEXTBEST_KEY_BURST, NEXTBEST_SESSION_BURST and NEXTBEST_RATE_SESSIONS_MAX "
                "are at least 1"
            )

    @property
    def cors_any_origin(self) -> bool:
        return "*" in self.cors_origins

    @property
    def uses_dev_keys(self) -> bool:
        return (
            DEV_KEYS["admin"] in self.admin_keys
            or self.token_secret == DEV_KEYS["token_secret"]
            or self.advisor_token_secret == DEV_KEYS["advisor_token_secret"]
        )

    def __repr__(self) -> str:
        masked = {f: getattr(self, f) for f in self.__struct_fields__}
        for f in ("write_keys", "browser_keys", "server_keys", "admin_keys", "metrics_keys"):
            masked[f] = f"<{len(masked[f])} keys>"
        masked["token_secret"] = "<secret>" if self.token_secret else "<unset>"
        masked["advisor_token_secret"] = "<secret>" if self.advisor_token_secret else "<unset>"
        masked["data"] = without_password(self.data)
        masked["profiles"] = without_password(self.profiles)
        masked["bus"] = without_password(self.bus)  # webhooks: their own repr masks them
        masked["token_secrets_old"] = f"<{len(self.token_secrets_old)} secrets>"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in masked.items()) + ")"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``NEXTBEST_*``; with no keys configured, fall back to the development keys."""
        e = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, key in (
            ("catalog", "CATALOG"),
            ("data", "DATA"),
            ("profiles", "PROFILES"),
            ("bus", "BUS"),
            ("fold_partitions", "FOLD_PARTITIONS"),
            ("fold_name", "FOLD_NAME"),
            ("host", "HOST"),
            ("sqlite_synchronous", "SQLITE_SYNCHRONOUS"),
            ("token_secret", "TOKEN_SECRET"),
            ("advisor_token_secret", "ADVISOR_TOKEN_SECRET"),
            ("origin_header", "ORIGIN_HEADER"),
        ):
            if f"NEXTBEST_{key}" in e:
                values[name] = e[f"NEXTBEST_{key}"]
        if "NEXTBEST_STORE" in e:  # the scale-out docs' name for the logs' store (issue #17)
            store = e["NEXTBEST_STORE"]
            if "data" in values and values["data"] != store:
                raise ConfigError(
                    "NEXTBEST_STORE and NEXTBEST_DATA name different stores: set one of them"
                )
            values["data"] = store
        for name, key in (
            ("port", "PORT"),
            ("bus_partitions", "BUS_PARTITIONS"),
            ("fold_cache", "FOLD_CACHE"),
            ("max_body_bytes", "MAX_BODY_BYTES"),
            ("snapshot_every", "SNAPSHOT_EVERY"),
            ("browser_body_bytes", "BROWSER_BODY_BYTES"),
            ("key_burst", "KEY_BURST"),
            ("session_burst", "SESSION_BURST"),
            ("rate_sessions_max", "RATE_SESSIONS_MAX"),
            ("cors_max_age", "CORS_MAX_AGE"),
            ("origin_prefix_v4", "ORIGIN_PREFIX_V4"),
            ("origin_prefix_v6", "ORIGIN_PREFIX_V6"),
        ):
            if f"NEXTBEST_{key}" in e:
                raw = e[f"NEXTBEST_{key}"]
                if not raw.strip().isdigit():
                    raise ConfigError(f"NEXTBEST_{key} must be a whole number, not {raw!r}")
                values[name] = int(raw)
        for name, key, what in (
            ("key_rate", "KEY_RATE", "requests a second (a number)"),
            ("session_rate", "SESSION_RATE", "requests a second (a number)"),
            ("callback_sweep_seconds", "CALLBACK_SWEEP_SECONDS", "seconds (a number)"),
            ("fold_lease_seconds", "FOLD_LEASE_SECONDS", "seconds (a number)"),
        ):
            if f"NEXTBEST_{key}" in e:
                raw = e[f"NEXTBEST_{key}"]
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise ConfigError(f"NEXTBEST_{key} must be {what}, not {raw!r}") from None
        if "NEXTBEST_CORS_ORIGINS" in e:
            values["cors_origins"] = frozenset(origin(o) for o in _keys(e["NEXTBEST_CORS_ORIGINS"]))
        if "NEXTBEST_CORS_CREDENTIALS" in e:
            raw = e["NEXTBEST_CORS_CREDENTIALS"].strip().lower()
            if raw not in ("true", "false", "1", "0", "yes", "no", ""):
                raise ConfigError(f"NEXTBEST_CORS_CREDENTIALS must be true or false, not {raw!r}")
            values["cors_credentials"] = raw in ("true", "1", "yes")
        if "NEXTBEST_CLOCK" in e:
            raw = e["NEXTBEST_CLOCK"].strip().lower()
            if raw not in tuple(ClockKind):
                kinds = " or ".join(k.value for k in ClockKind)
                raise ConfigError(f"NEXTBEST_CLOCK must be {kinds}, not {e['NEXTBEST_CLOCK']!r}")
            values["clock"] = raw
        for kind in ("write", "browser", "server", "admin"):
            values[f"{kind}_keys"] = _keys(e.get(f"NEXTBEST_{kind.upper()}_KEYS"))
        values["metrics_keys"] = _keys(e.get("NEXTBEST_METRICS_KEYS"))
        values["webhooks"] = webhooks_from_env(e)
        if "NEXTBEST_TOKEN_SECRETS_OLD" in e:
            old = e["NEXTBEST_TOKEN_SECRETS_OLD"].split(",")
            values["token_secrets_old"] = tuple(s.strip() for s in old if s.strip())
        if not any(values[f"{k}_keys"] for k in ("write", "browser", "server", "admin")):
            for kind in ("write", "browser", "server", "admin"):
                values[f"{kind}_keys"] = frozenset({DEV_KEYS[kind]})
            values.setdefault("token_secret", DEV_KEYS["token_secret"])
            values.setdefault("advisor_token_secret", DEV_KEYS["advisor_token_secret"])
        values.update(overrides)
        return msgspec.convert(values, cls, strict=False)
