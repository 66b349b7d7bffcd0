"""Settings, read once into a frozen Struct: nothing sees two values of one setting.

Keys are secrets: ``repr`` masks them and nothing logs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from nextbest.clock import ClockKind
from nextbest.errors import ConfigError

__all__ = ["DEV_KEYS", "Settings"]

#: Keys ``make run`` uses when none are configured. Never for production; ``serve`` warns.
DEV_KEYS = {
    "write": "dev-write-key",
    "browser": "dev-browser-key",
    "server": "dev-server-key",
    "admin": "dev-admin-key",
    "token_secret": "dev-token-secret",
}


def _keys(value: str | None) -> frozenset[str]:
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    catalog: str = "examples/bank"
    data: str = ".nextbest/embedded.sqlite"
    host: str = "127.0.0.1"
    port: int = 8000
    write_keys: frozenset[str] = frozenset()
    browser_keys: frozenset[str] = frozenset()
    server_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()
    token_secret: str = ""
    max_body_bytes: int = 4_500_000
    sqlite_synchronous: str = "FULL"
    snapshot_every: int = 50_000
    decision_flush_every: int = 10_000
    #: ``wall`` (production) or ``event``: now is the latest accepted event timestamp
    #: (replays, backfills, simulations)
    clock: ClockKind = ClockKind.WALL

    @property
    def uses_dev_keys(self) -> bool:
        return DEV_KEYS["admin"] in self.admin_keys or self.token_secret == DEV_KEYS["token_secret"]

    def __repr__(self) -> str:
        masked = {f: getattr(self, f) for f in self.__struct_fields__}
        for f in ("write_keys", "browser_keys", "server_keys", "admin_keys"):
            masked[f] = f"<{len(masked[f])} keys>"
        masked["token_secret"] = "<secret>" if self.token_secret else "<unset>"
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
            ("host", "HOST"),
            ("sqlite_synchronous", "SQLITE_SYNCHRONOUS"),
            ("token_secret", "TOKEN_SECRET"),
        ):
            if f"NEXTBEST_{key}" in e:
                values[name] = e[f"NEXTBEST_{key}"]
        for name, key in (
            ("port", "PORT"),
            ("max_body_bytes", "MAX_BODY_BYTES"),
            ("snapshot_every", "SNAPSHOT_EVERY"),
        ):
            if f"NEXTBEST_{key}" in e:
                raw = e[f"NEXTBEST_{key}"]
                if not raw.strip().isdigit():
                    raise ConfigError(f"NEXTBEST_{key} must be a whole number, not {raw!r}")
                values[name] = int(raw)
        if "NEXTBEST_CLOCK" in e:
            raw = e["NEXTBEST_CLOCK"].strip().lower()
            if raw not in tuple(ClockKind):
                kinds = " or ".join(k.value for k in ClockKind)
                raise ConfigError(f"NEXTBEST_CLOCK must be {kinds}, not {e['NEXTBEST_CLOCK']!r}")
            values["clock"] = raw
        for kind in ("write", "browser", "server", "admin"):
            values[f"{kind}_keys"] = _keys(e.get(f"NEXTBEST_{kind.upper()}_KEYS"))
        if not any(values[f"{k}_keys"] for k in ("write", "browser", "server", "admin")):
            for kind in ("write", "browser", "server", "admin"):
                values[f"{kind}_keys"] = frozenset({DEV_KEYS[kind]})
            values.setdefault("token_secret", DEV_KEYS["token_secret"])
        values.update(overrides)
        return msgspec.convert(values, cls, strict=False)
