"""How the site loop talks to an engine: one small port, two adapters.

    SiteEngine      send a Segment batch; decide for a page at its time; close
    LocalEngine     an in-process Engine on event time (memory, or a SQLite store)
    RemoteEngine    a running ``nextbest serve --clock event`` over HTTP, as a site talks to
                    it: ``/v1/batch`` with a write key, ``/v1/decide`` with a server key and
                    the page's time as ``context.now``

Both engines run on event time: each event is received at its own time and a decision is
taken at its page's time, so the same seeded run gives the same decisions, models and figures
in process and over HTTP, provided the server's store starts empty (its decision ids, which
seed exploration, are counted from its decision log like the in-process engine's).

Only the engine's own chooser runs over HTTP: a policy that picks items inside the engine
(the ``choose`` hook: random, static, prior, oracle) needs the engine in process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import httpx
import msgspec
import orjson

from nextbest.bootstrap import EVENT_TIME_ID_PREFIX, MEMORY, build_engine
from nextbest.catalog.compiled import Catalog
from nextbest.clock import ClockKind
from nextbest.decide.model import Chooser, Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import InputError, RemoteError
from nextbest.settings import DEV_KEYS, Settings
from nextbest.sim.world import iso

__all__ = ["LocalEngine", "RemoteEngine", "SiteEngine"]


class SiteEngine(Protocol):
    """What the site loop needs of an engine."""

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        """Deliver one ``/v1/batch`` of Segment-spec messages (all stored, or an error)."""
        ...

    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None,
        anonymous_id: str | None,
        at: float,
        choose: Chooser | None = None,
    ) -> Decision:
        """Decide for a page viewed at ``at`` (epoch seconds, whole milliseconds: the page
        event's own time); ``choose``: a policy's chooser instead of the engine's."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    """An in-process engine on event time, built by the composition root like a server's
    (``data``: ``:memory:`` or a SQLite file an analyst can export and evaluate later).
    Decision ids are counted like a server's on event time, ``{id_prefix}00000001`` ...
    (a server's prefix is ``nextbest-``: the nextbest policy's runs agree)."""

    def __init__(
        self, catalog: Catalog, data: str = MEMORY, id_prefix: str = EVENT_TIME_ID_PREFIX
    ) -> None:
        self.engine: Engine = build_engine(
            Settings(data=data, clock=ClockKind.EVENT),
            catalog=catalog,
            freeze_gc=False,
            id_prefix=id_prefix,
        )

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        self.engine.ingest_batch(orjson.dumps({"batch": messages}))

    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None,
        anonymous_id: str | None,
        at: float,
        choose: Chooser | None = None,
    ) -> Decision:
        return self.engine.decide(
            request, user_id=user_id, anonymous_id=anonymous_id, choose=choose, now=at
        )

    def close(self) -> None:
        self.engine.close()


_decision = msgspec.json.Decoder(Decision)


class RemoteEngine:
    """A running nextbest on event time, over HTTP. ``check`` (called first) refuses a
    server on the wall clock (it would judge the run at today's date and learn misses only
    after real minutes) or one serving another catalog than ``catalog``."""

    def __init__(
        self,
        target: str,
        catalog: Catalog,
        *,
        write_key: str = DEV_KEYS["write"],
        server_key: str = DEV_KEYS["server"],
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = httpx.URL(target)
        if url.scheme not in ("http", "https") or not url.host:
            raise InputError(
                f"target must be an http(s) URL such as http://127.0.0.1:8000: {target!r}"
            )
        self.target = str(url).rstrip("/")
        self.catalog = catalog
        self._write = httpx.BasicAuth(write_key, "")
        self._server = httpx.BasicAuth(server_key, "")
        self._http = httpx.Client(
            base_url=self.target,
            timeout=timeout,
            transport=transport,
            headers={"Content-Type": "application/json", "User-Agent": "nextbest-sim/0.1"},
        )

    def _call(
        self, method: str, path: str, body: bytes | None = None, auth: httpx.Auth | None = None
    ) -> httpx.Response:
        try:
            resp = self._http.request(method, path, content=body, auth=auth)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{method} {self.target}{path}: {exc}") from exc
        if resp.status_code != 200:
            try:
                error = orjson.loads(resp.content)
                what = f"{error['code']}: {error['message']}"
                if error.get("path"):
                    what += f" (at {error['path']})"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                what = resp.text[:200]
            raise RemoteError(f"{method} {path}: {resp.status_code} {what}", resp.status_code)
        return resp

    def check(self) -> None:
        """The server runs on event time and serves this run's catalog: RemoteError if not."""
        health = orjson.loads(self._call("GET", "/healthz").content)
        if health.get("clock") != ClockKind.EVENT.value:
            raise RemoteError(
                f"{self.target} decides on its wall clock: a simulated run over HTTP needs a "
                "server on event time (nextbest serve --clock event), on a new store"
            )
        if health.get("catalog") != self.catalog.version:
            raise RemoteError(
                f"{self.target} serves catalog {health.get('catalog')}, this run loaded "
                f"{self.catalog.version}: pass the server's catalog with --catalog"
            )

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        self._call("POST", "/v1/batch", orjson.dumps({"batch": messages}), self._write)

    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None,
        anonymous_id: str | None,
        at: float,
        choose: Chooser | None = None,
    ) -> Decision:
        if choose is not None:
            raise InputError(
                "this policy chooses inside the engine (its choose hook): run it in process, "
                "without --target; only nextbest runs over HTTP"
            )
        body = {
            "placement": request.placement,
            "userId": user_id,
            "anonymousId": anonymous_id,
            "limit": request.limit,
            "context": {**request.context, "now": iso(at)},
            "exclude": sorted(request.exclude),
            "explain": True,  # the whole decision, as the log holds it
        }
        resp = self._call("POST", "/v1/decide", orjson.dumps(body), self._server)
        return _decision.decode(resp.content)

    def close(self) -> None:
        self._http.close()
