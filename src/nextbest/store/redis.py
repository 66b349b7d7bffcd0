"""Redis behind the state port: saved derived state, one key per row (issue #17).

Keys, under a namespace ``ns`` (one per deployment; no ``:`` in it)::

    <ns>:state                  the watermark: JSON [generation, seq, version]
    <ns>:generation             a counter: generation numbers are never handed out twice
    <ns>:<gen>:<kind>:<key>     one row: its body as written (a msgpack profile, a userId ...)
    <ns>:written:<id>           a write mark (``mark_written``): the bus sequence of the last
                                event an API worker published for ``u:<userId>`` or
                                ``a:<anonymousId>``; expires after ``MARK_TTL`` seconds

A *generation* is one whole set of rows. A save without ``replace`` writes into the current
generation and moves the watermark in one MULTI/EXEC (all or nothing; WATCHed, so a save never
writes into a generation another writer has just replaced). A save with ``replace`` writes
its rows under a new generation, outside any transaction (no reader looks there yet), then
flips ``<ns>:state`` to it in one MULTI/EXEC, then UNLINKs every other generation's keys.
Readers see the old rows or the new ones, never a mix, and Redis is never blocked for the
whole write: the price is memory, both generations for the time of the write (twice the state
at worst), and the sweep's walk over the namespace. A Lua script deleting and writing 20 M
rows would be atomic too, but would stop every other client for seconds to minutes.

Rows of a kind are found by SCAN over the generation's prefix, not through a set per kind:
an index set costs a member per row (~50-60 bytes each, ~1 GB at 20 M profiles, measured by
``bench/store_redis.py``) and one more write per changed row, to speed up only what is rare
(``load_state`` at a start, the sweep after a replace) and reads every row anyway. SCAN walks
the whole database, so give nextbest a database of its own. Rows come back in pages
(SCAN COUNT, then MGET), never in one reply; a row SCAN returns twice is yielded once.

Several fold workers (``partitioned_fold``: each saving the customers of its bus partitions)
save with ``save_rows`` instead: their rows and write marks into the current generation in
one MULTI/EXEC, WATCHing the watermark without writing it (so they never conflict with one
another, and a save after a flush or a replace fails instead of writing into a generation
nobody reads); the watermark is made once, by whichever saves first.

Like SQLite's, ``load_state`` is a consistent cut only when no save runs meanwhile (the engine
loads once, at start). A point read (``get_rows``) is always consistent: the rows and the
generation pointer come back in one MGET. This is standalone Redis: a cluster would need every
key of a namespace in one hash slot for these transactions.

redis-py errors never leave this module: connection refused, timeouts and a server still
loading raise StoreUnavailable, anything else StoreError; a message names host:port, never
the URL's password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from nextbest.errors import ConfigError, LeaseLost, StateLost, StoreError, StoreUnavailable
from nextbest.store.port import SavedState, StateRow

__all__ = ["DEFAULT_NAMESPACE", "MARK_TTL", "RedisState"]

#: the namespace nextbest's state lives under unless told otherwise
DEFAULT_NAMESPACE = "nextbest"
#: seconds a write mark is kept: a decision waits for the fold a fraction of a second, so a
#: mark older than this is waited for by nobody (and the keys do not pile up)
MARK_TTL = 30.0
#: raise each KEYS[i] to ARGV[i + 1] (a bus sequence) if it is lower or absent, kept ARGV[1] ms
_RAISE_MARKS = """
for i, key in ipairs(KEYS) do
  local seq = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('GET', key) or '0')
  if old < seq then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  end
end
return #KEYS
"""
#: claim every KEYS[i] for ARGV[2] (kept ARGV[1] ms) if none is claimed by another: 1, else 0
_CLAIM = """
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and owner ~= ARGV[2] then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2], 'PX', ARGV[1])
end
return 1
"""
#: delete each KEYS[i] still claimed by ARGV[1]
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
  end
end
return #KEYS
"""
#: take or renew each KEYS[i] for ARGV[2] (kept ARGV[1] ms) unless another holds it: a list
#: of 1 (held by ARGV[2] now) or 0 (another's), one per key
_LEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and owner ~= ARGV[2] then
    out[i] = 0
  else
    redis.call('SET', key, ARGV[2], 'PX', ARGV[1])
    out[i] = 1
  end
end
return out
"""
#: seconds a claim lasts if its stitch never completes (a safety net, never reached normally)
CLAIM_TTL = 600.0
#: rows per SCAN page and per MGET; rows per pipeline when a replace writes a new generation
_PAGE = 1_000
_GLOB = re.compile(r"([*?\[\]\\])")
_ROW_GENERATION = re.compile(rb"^(\d+):")

_Watermark = tuple[int, int, str]
_decode_watermark = msgspec.json.Decoder(tuple[int, int, str]).decode


def _glob_escaped(text: str) -> str:
    return _GLOB.sub(r"\\\1", text)


def _kind_part(kind: str) -> str:
    """A kind as it sits in a key: ``%`` and ``:`` escaped, so the key splits back."""
    return kind.replace("%", "%25").replace(":", "%3A")


def _kind_from(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def _redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unreadable Redis URL>"


class RedisState:
    """The state port on Redis: ``RedisState("redis://127.0.0.1:6379/0", "nextbest")``.

    Connects (and PINGs) at once, so a wrong URL or an absent server is a clear error at
    start. ``timeout``: seconds for a connect and for each reply."""

    def __init__(self, url: str, namespace: str = DEFAULT_NAMESPACE, timeout: float = 5.0) -> None:
        if not namespace or ":" in namespace:
            raise ConfigError(f"a Redis namespace is a non-empty name without ':': {namespace!r}")
        self.namespace = namespace
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            )
        except ValueError as exc:
            raise ConfigError(f"not a Redis URL: {_redacted(url)} ({exc})") from exc
        kw = self.client.connection_pool.connection_kwargs
        self.where = str(kw["path"]) if "path" in kw else f"{kw.get('host')}:{kw.get('port')}"
        self._password = str(kw.get("password") or "")
        self._state_key = f"{namespace}:state".encode()
        self._counter_key = f"{namespace}:generation".encode()
        self._ns_prefix = f"{namespace}:".encode()
        self._ns_match = _glob_escaped(namespace) + ":*"
        self._generation: int | None = None  # the last one seen (point reads start from it)
        #: ``save_rows`` found the saved state gone: it refuses from then on
        self._lost = False
        self._mark_prefix = f"{namespace}:written:".encode()
        self._erased_prefix = f"{namespace}:erased:".encode()
        self._feed_key = f"{namespace}:erasures".encode()
        self._outcome_prefix = f"{namespace}:erasure:".encode()
        self._parts_prefix = f"{namespace}:erasure-parts:".encode()
        self._raise_marks = self.client.register_script(_RAISE_MARKS)
        self._claim = self.client.register_script(_CLAIM)
        self._release = self.client.register_script(_RELEASE)
        self._claim_prefix = f"{namespace}:stitching:".encode()
        self._lease = self.client.register_script(_LEASE)
        self._lease_prefix = f"{namespace}:lease:".encode()
        #: the leases every ``save_rows`` checks are its writer's (``fence``)
        self._fence: tuple[str, list[bytes]] | None = None
        with self._translated("connect"):
            self.client.ping()

    # ------------------------------------------------------------------ the port
    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        with self._translated("save state"):
            if replace:
                self._save_replacing(seq, version, rows)
            else:
                self._save_changes(seq, version, rows)

    def load_state(self) -> SavedState | None:
        with self._translated("load state"):
            mark = self._watermark(self.client.get(self._state_key))
        if mark is None:
            return None
        generation, seq, version = mark
        self._generation = generation
        return SavedState(seq, version, self._rows(generation))

    # ------------------------------------------------------------------ beyond the port
    def get_rows(self, kind: str, keys: Sequence[str]) -> list[bytes | None]:
        """The bodies of these rows as last saved, in the order of ``keys`` (None: no such
        row): what a stateless worker reads to decide for one customer. One round trip
        (rows and generation pointer in one MGET), two after a replace moved the generation."""
        return self.read_rows([(kind, k) for k in keys])

    def read_rows(
        self, rows: Sequence[tuple[str, str]], marks: Sequence[str] = ()
    ) -> list[bytes | None]:
        """``get_rows`` over rows of several kinds at once: (kind, key) each, one MGET (a
        profile, its identity links and the folded position, read as one consistent cut:
        a save writes them all in one MULTI/EXEC); then the write marks ``marks`` (ids as
        ``mark_written`` names them), in the same MGET."""
        if not rows and not marks:
            return []
        mark_keys = [self._mark_prefix + m.encode() for m in marks]
        with self._translated("read rows"):
            while True:
                generation = self._generation
                if generation is None:
                    got = self.client.mget([self._state_key, *mark_keys])
                    mark = self._watermark(got[0])
                    if mark is None:  # nothing saved yet
                        return [None] * len(rows) + [_as_bytes(b) for b in got[1:]]
                    generation = self._generation = mark[0]
                got = self.client.mget(
                    [
                        self._state_key,
                        *(self._row_key(generation, k, key) for k, key in rows),
                        *mark_keys,
                    ]
                )
                mark = self._watermark(got[0])
                if mark is None:
                    self._generation = None
                    return [None] * len(rows) + [_as_bytes(b) for b in got[1 + len(rows) :]]
                if mark[0] == generation:
                    return [_as_bytes(body) for body in got[1:]]
                self._generation = mark[0]  # replaced meanwhile: read the new generation

    def claim(self, customers: Sequence[str], owner: str) -> bool:
        """Claim every one of ``customers`` for the stitch ``owner`` (a messageId), all or
        none: False when another stitch holds one (``partitioned_fold``). A claim lasts
        until ``save_rows`` releases it, or ``CLAIM_TTL`` at most."""
        keys = [self._claim_prefix + c.encode() for c in customers]
        with self._translated("claim"):
            return bool(self._claim(keys=keys, args=[int(CLAIM_TTL * 1000), owner]))

    def take_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """Take or renew each lease ``names[i]`` for ``owner``, kept ``ttl`` seconds from now,
        unless another owner holds it: True where ``owner`` holds it now. One round trip (a
        Lua script: each check and set is atomic)."""
        if not names:
            return []
        keys = [self._lease_prefix + n.encode() for n in names]
        with self._translated("take leases"):
            got = self._lease(keys=keys, args=[max(1, int(ttl * 1000)), owner])
        return [bool(int(x)) for x in got]

    def drop_leases(self, names: Sequence[str], owner: str) -> None:
        """End the leases of ``names`` that ``owner`` still holds (a clean stop)."""
        if not names:
            return
        keys = [self._lease_prefix + n.encode() for n in names]
        with self._translated("drop leases"):
            self._release(keys=keys, args=[owner])

    def lease_holders(self, names: Sequence[str]) -> list[str | None]:
        """Who holds each lease now (None: nobody)."""
        keys = [self._lease_prefix + n.encode() for n in names]
        with self._translated("read leases"):
            got = self.client.mget(keys) if keys else []
        return [None if g is None else _as_bytes_key(g).decode() for g in got]

    def fence(self, owner: str, names: Sequence[str]) -> None:
        """From now on every ``save_rows`` writes only while ``owner`` holds every lease of
        ``names`` (checked in the same transaction, no extra round trip): LeaseLost and
        nothing written otherwise. An empty ``names`` ends the fence."""
        self._fence = (owner, [self._lease_prefix + n.encode() for n in names]) if names else None

    def save_rows(
        self,
        version: str,
        rows: Sequence[StateRow],
        marks: Mapping[str, int] | None = None,
        release: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Write ``rows`` (and raise ``marks`` as ``mark_written`` does) into the current
        generation in one MULTI/EXEC, without moving the watermark (``save_state``'s ``seq``):
        one of several writers each saving its own rows; ``release``: the claims to end in
        the same write (owner -> its customers). The first save makes the watermark
        (generation, 0, ``version``); StateLost when the saved state vanished since this
        store last saw it (flushed), StoreError when it changed meanwhile (a replace:
        nothing written)."""
        with self._translated("save rows"):
            while True:
                with self.client.pipeline(transaction=True) as pipe:
                    fence = self._fence
                    leases = fence[1] if fence is not None else []
                    pipe.watch(self._state_key, *leases)  # type: ignore[no-untyped-call]
                    got = pipe.mget([self._state_key, *leases])
                    mark = self._watermark(got[0])
                    if mark is None:
                        if self._generation is not None or self._lost:
                            # and every later save: rows written into a new state would be
                            # a part of one (the writer restarts, and rebuilds)
                            self._generation = None
                            self._lost = True
                            raise StateLost(
                                f"Redis at {self.where}: the saved state under "
                                f"{self.namespace!r} vanished (flushed, or restarted without "
                                "its data)"
                            )
                        generation = self._new_generation(pipe)
                        pipe.multi()
                        pipe.set(self._state_key, msgspec.json.encode((generation, 0, version)))
                        try:
                            pipe.execute()
                        except redis.exceptions.WatchError:
                            continue  # another writer made it meanwhile: write into that one
                        self._generation = generation
                        continue
                    if fence is not None:  # (after StateLost: a flush takes the leases too)
                        self._check_fence(fence[0], leases, got[1:])
                    generation = mark[0]
                    pipe.multi()
                    for start in range(0, len(rows), _PAGE):
                        self._queue_rows(pipe, generation, rows[start : start + _PAGE])
                    if marks:
                        keys = [self._mark_prefix + m.encode() for m in marks]
                        args = [int(MARK_TTL * 1000), *marks.values()]
                        self._raise_marks(keys=keys, args=args, client=pipe)
                    for owner, customers in (release or {}).items():
                        keys = [self._claim_prefix + c.encode() for c in customers]
                        self._release(keys=keys, args=[owner], client=pipe)
                    pipe.execute()
                self._generation = generation
                return

    def _check_fence(self, owner: str, keys: Sequence[bytes], held: Sequence[object]) -> None:
        lost = [
            k.decode()[len(self._lease_prefix) :]
            for k, h in zip(keys, held, strict=True)
            if h is None or _as_bytes_key(h).decode() != owner
        ]
        if lost:
            raise LeaseLost(
                f"Redis at {self.where}: {owner!r} no longer holds the leases {lost} "
                "(expired or taken by another worker): nothing saved"
            )

    def saved_version(self) -> str | None:
        """The catalog version the saved state was folded under (None: nothing saved)."""
        with self._translated("read watermark"):
            mark = self._watermark(self.client.get(self._state_key))
        if mark is None:
            return None
        self._generation = mark[0]
        return mark[2]

    def mark_written(self, marks: Mapping[str, int], ttl: float = MARK_TTL) -> None:
        """Raise each write mark (``u:<userId>``, ``a:<anonymousId>``) to its bus sequence,
        never lowering one another worker raised further; each kept ``ttl`` seconds from its
        last raise. One round trip (a Lua script: the compare and the set are atomic)."""
        if not marks:
            return
        keys = [self._mark_prefix + m.encode() for m in marks]
        args = [int(ttl * 1000), *marks.values()]
        with self._translated("mark written"):
            self._raise_marks(keys=keys, args=args)

    # ------------------------------------------------------------------ erasures
    def record_tombstones(self, tombstones: Mapping[str, float], ttl: float) -> None:
        """``ErasureLedger.record_tombstones``: ``<ns>:erased:<hash>`` -> erasure time, kept
        ``ttl`` seconds, and each in the feed ``<ns>:erasures`` (a sorted set by time, older
        than ``ttl`` trimmed). One MULTI/EXEC."""
        if not tombstones:
            return
        with self._translated("record tombstones"), self.client.pipeline() as pipe:
            for digest, at in tombstones.items():
                pipe.set(self._erased_prefix + digest.encode(), repr(at), px=int(ttl * 1000))
            pipe.zadd(self._feed_key, dict(tombstones))
            pipe.zremrangebyscore(self._feed_key, "-inf", max(tombstones.values()) - ttl)
            pipe.execute()

    def tombstones(self) -> dict[str, float]:
        """``ErasureLedger.tombstones``: every tombstone kept (hash -> erasure time)."""
        out: dict[str, float] = {}
        start = len(self._erased_prefix)
        with self._translated("read tombstones"):
            for keys in self._scan_pages(_glob_escaped(self._erased_prefix.decode()) + "*"):
                for key, at in zip(keys, self.client.mget(keys), strict=True):
                    if at is not None:
                        out[key[start:].decode()] = float(_as_bytes_key(at))
        return out

    def erased_since(self, since: float) -> list[tuple[str, float]]:
        """``ErasureLedger.erased_since``: the feed's tombstones recorded after ``since``."""
        with self._translated("read erasures"):
            got = self.client.zrangebyscore(self._feed_key, f"({since!r}", "+inf", withscores=True)
        pairs = cast("list[tuple[bytes, float]]", got)
        return [(_as_bytes_key(m).decode(), float(at)) for m, at in pairs]

    def finish_erasure(
        self, receipt: str, outcome: bytes, ttl: float, marks: Sequence[str] = ()
    ) -> None:
        """``ErasureLedger.finish_erasure``: the outcome under ``<ns>:erasure:<receipt>``
        (kept ``ttl`` seconds; a first one is never replaced) and the write marks ``marks``
        deleted, in one MULTI/EXEC."""
        with self._translated("finish erasure"), self.client.pipeline() as pipe:
            pipe.set(self._outcome_prefix + receipt.encode(), outcome, px=int(ttl * 1000), nx=True)
            if marks:
                pipe.delete(*(self._mark_prefix + m.encode() for m in marks))
            pipe.execute()

    def erasure_outcome(self, receipt: str) -> bytes | None:
        """``ErasureLedger.erasure_outcome``: the outcome ``finish_erasure`` recorded."""
        with self._translated("read erasure outcome"):
            return _as_bytes(self.client.get(self._outcome_prefix + receipt.encode()))

    def record_part(self, receipt: str, part: str, body: bytes, ttl: float) -> dict[str, bytes]:
        """``ErasureLedger.record_part``: the hash ``<ns>:erasure-parts:<receipt>`` (part ->
        body; HSETNX, then read whole, in one MULTI/EXEC)."""
        key = self._parts_prefix + receipt.encode()
        with self._translated("record erasure part"), self.client.pipeline() as pipe:
            pipe.hsetnx(key, part, body)
            pipe.pexpire(key, int(ttl * 1000))
            pipe.hgetall(key)
            got = pipe.execute()[-1]
        return {_as_bytes_key(k).decode(): _as_bytes_key(v) for k, v in got.items()}

    def drop_claims(self, customers: Sequence[str]) -> None:
        """``ErasureLedger.drop_claims``: ``<ns>:stitching:<customer>`` deleted, whoever
        holds it."""
        if customers:
            with self._translated("drop claims"):
                self.client.delete(*(self._claim_prefix + c.encode() for c in customers))

    def ping(self) -> None:
        """StoreUnavailable unless Redis answers now."""
        with self._translated("ping"):
            self.client.ping()

    def memory_usage(self, kind: str, key: str) -> int | None:
        """Bytes Redis spends on one row's key (MEMORY USAGE: key, value and overhead); None
        when there is no such row."""
        with self._translated("memory usage"):
            mark = self._watermark(self.client.get(self._state_key))
            if mark is None:
                return None
            return self.client.memory_usage(self._row_key(mark[0], kind, key), samples=0)

    def drop(self) -> int:
        """Delete every key of the namespace (saved state, watermark, counter): as if nothing
        was ever saved. How many keys went."""
        with self._translated("drop"):
            self._generation = None
            return self._unlink_matching(lambda _key: True)

    def close(self) -> None:
        with self._translated("close"):
            self.client.close()

    # ------------------------------------------------------------------ saving
    def _save_changes(self, seq: int, version: str, rows: Sequence[StateRow]) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            # a replace meanwhile fails this save (WatchError)
            pipe.watch(self._state_key)  # type: ignore[no-untyped-call]
            mark = self._watermark(pipe.get(self._state_key))
            if mark is None and self._generation is not None:
                self._generation = None
                raise StateLost(
                    f"Redis at {self.where}: the saved state under {self.namespace!r} vanished "
                    "(flushed, or restarted without its data): save it whole"
                )
            generation = mark[0] if mark is not None else self._new_generation(pipe)
            pipe.multi()
            for start in range(0, len(rows), _PAGE):
                self._queue_rows(pipe, generation, rows[start : start + _PAGE])
            pipe.set(self._state_key, msgspec.json.encode((generation, seq, version)))
            pipe.execute()
        self._generation = generation

    def _save_replacing(self, seq: int, version: str, rows: Sequence[StateRow]) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(self._state_key)  # type: ignore[no-untyped-call]
            generation = self._new_generation(pipe)
            # no reader looks at the new generation before the flip: written in pages
            with self.client.pipeline(transaction=False) as writer:
                for start in range(0, len(rows), _PAGE):
                    self._queue_rows(writer, generation, rows[start : start + _PAGE])
                    writer.execute()
            pipe.multi()  # the flip: fails if another writer moved the watermark meanwhile
            pipe.set(self._state_key, msgspec.json.encode((generation, seq, version)))
            pipe.execute()
        self._generation = generation
        self._sweep(keep=generation)

    def _queue_rows(self, pipe: Any, generation: int, rows: Sequence[StateRow]) -> None:
        """Rows in their order as few commands: each run of upserts one MSET, each run of
        deletes one DEL (a command per row costs the client ~3x more)."""
        sets: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for row in rows:
            key = self._row_key(generation, row.kind, row.key)
            if row.body is None:
                if sets:
                    pipe.mset(sets)
                    sets = {}
                deletes.append(key)
            else:
                if deletes:
                    pipe.delete(*deletes)
                    deletes = []
                sets[key] = row.body
        if sets:
            pipe.mset(sets)
        if deletes:
            pipe.delete(*deletes)

    def _new_generation(self, client: Any) -> int:
        return int(client.incr(self._counter_key))

    def _sweep(self, keep: int) -> int:
        """UNLINK the rows of every generation but ``keep`` (the replaced one, and any left by
        a replace that failed before its flip); freed in Redis's background thread."""
        keep_prefix = f"{keep}:".encode()
        start = len(self._ns_prefix)

        def other_generation(key: bytes) -> bool:
            rest = key[start:]
            return _ROW_GENERATION.match(rest) is not None and not rest.startswith(keep_prefix)

        return self._unlink_matching(other_generation)

    def _unlink_matching(self, doomed: Callable[[bytes], bool]) -> int:
        gone = 0
        for keys in self._scan_pages(self._ns_match):
            chosen = [k for k in keys if doomed(k)]
            if chosen:
                gone += int(self.client.unlink(*chosen))
        return gone

    # ------------------------------------------------------------------ reading
    def _rows(self, generation: int) -> Iterator[StateRow]:
        prefix = self._generation_prefix(generation)
        match = _glob_escaped(prefix.decode()) + "*"
        seen: set[bytes] = set()  # SCAN may return a key twice (the table grew meanwhile)
        with self._translated("load state"):
            for keys in self._scan_pages(match):
                fresh = [k for k in keys if k not in seen]
                if not fresh:
                    continue
                seen.update(fresh)
                for key, body in zip(fresh, self.client.mget(fresh), strict=True):
                    if body is None:  # deleted since the SCAN
                        continue
                    kind, _, row_key = key[len(prefix) :].decode().partition(":")
                    yield StateRow(_kind_from(kind), row_key, _as_bytes(body))

    def _scan_pages(self, match: str) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = self.client.scan(cursor, match=match, count=_PAGE)
            if keys:
                yield [_as_bytes_key(k) for k in keys]
            if cursor == 0:
                return

    # ------------------------------------------------------------------ keys
    def _generation_prefix(self, generation: int) -> bytes:
        return self._ns_prefix + f"{generation}:".encode()

    def _row_key(self, generation: int, kind: str, key: str) -> bytes:
        return self._generation_prefix(generation) + f"{_kind_part(kind)}:{key}".encode()

    def _watermark(self, raw: object) -> _Watermark | None:
        if raw is None:
            return None
        try:
            return _decode_watermark(_as_bytes_key(raw))
        except msgspec.DecodeError as exc:
            raise StoreError(
                f"Redis at {self.where}: {self._state_key.decode()} holds no nextbest "
                f"watermark ({exc})"
            ) from exc

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # refused, reset, timed out, authentication failed, still loading its data
            raise StoreUnavailable(self._message(action, exc)) from exc
        except redis.exceptions.WatchError as exc:
            raise StoreError(
                self._message(action, exc) + " (the saved state changed meanwhile: another "
                "writer on this namespace, or a lost connection)"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise StoreError(self._message(action, exc)) from exc

    def _message(self, action: str, exc: Exception) -> str:
        text = str(exc) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return f"Redis at {self.where}: {action}: {text}"


def _as_bytes(body: object) -> bytes | None:
    return None if body is None else _as_bytes_key(body)


def _as_bytes_key(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise StoreError(f"Redis answered {type(value).__name__} where bytes were expected")
