"""Who sent a feedback event, as the trust rules count it: the key's fingerprint and the
network origin. Pure: no sockets, no headers (the HTTP face hands in what it saw).

**Key id.** ``key_id(kind, key)`` is ``<kind>:<12 hex>``: the key's kind and the first 48
bits of SHA-256 over a domain label and the key. It names a key in the event log and in
counters without holding it; keys are random secrets (a guessable key is weak whatever its
fingerprint), and a browser key is public anyway.

**Network origin.** ``network_origin(address)`` is the network an address belongs to, as
text (``203.0.113.0/24``, ``2001:db8:1::/48``): IPv4 truncated to ``/24`` and IPv6 to
``/48`` by default. One address says little: a household or office shares one behind NAT,
and one host holds a whole IPv6 ``/64``; but addresses come cheap in blocks (a cloud
account gets many addresses of one ``/24``, a hosted server a ``/48`` of IPv6), so a block
is what one sender controls. An IPv4-mapped IPv6 address counts as its IPv4 address. An
address of the bank's own networks (loopback, RFC 1918 private ranges, carrier-grade NAT's
shared 100.64.0.0/10, IPv6 unique local, link-local, unspecified, multicast) has no origin:
it is a proxy, a load balancer or a test, not a client, and counting it would count every
client behind it as one.

**Stamping** (``stamp``, by the HTTP face on each request's messages): a browser key's
messages lose any ``context.ip`` they carry (a page cannot say where it is; nextbest keeps
no address from a browser, only the network of its feedback), and its feedback gets the
network of the address the bank's edge reported for the request (``NEXTBEST_ORIGIN_HEADER``,
else the socket's peer). Write and server keys are the bank's own servers relaying
customers' events: their feedback's origin is the network of the ``context.ip`` they pass
through, if any. Every feedback event gets its sender's key id.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable

from nextbest.decide.feedback import is_feedback
from nextbest.events.model import Event
from nextbest.guard.senders import KeyKind, Sender

#: looked up once: in Python 3.11 each ``KeyKind.X`` read calls the enum metaclass's hook
_BROWSER = KeyKind.BROWSER

__all__ = ["DEFAULT_V4_PREFIX", "DEFAULT_V6_PREFIX", "key_id", "network_origin", "stamp"]

#: how much of an address names its network origin
DEFAULT_V4_PREFIX = 24
DEFAULT_V6_PREFIX = 48

_OWN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "100.64.0.0/10")
)
#: a whole address as text is at most this long (IPv6 with a zone: 45 + a short zone)
_MAX_ADDRESS = 64


@functools.lru_cache(maxsize=256)
def key_id(kind: str, key: str) -> str:
    """``<kind>:<12 hex>``: a key's fingerprint (module docstring); cached, since only
    configured keys reach it."""
    digest = hashlib.sha256(b"nextbest key id\x00" + key.encode()).hexdigest()
    return f"{kind}:{digest[:12]}"


def network_origin(
    address: str, v4_prefix: int = DEFAULT_V4_PREFIX, v6_prefix: int = DEFAULT_V6_PREFIX
) -> str | None:
    """The network origin of ``address`` (module docstring); None when it is not an IP
    address, or one of the bank's own networks."""
    text = address.strip()
    if not text or len(text) > _MAX_ADDRESS:
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]  # an IPv6 zone names an interface, not a network
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or any(ip in n for n in _OWN_NETWORKS if n.version == ip.version)
    ):
        return None
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def stamp(
    events: Iterable[Event],
    sender: Sender,
    seen: str | None,
    v4_prefix: int = DEFAULT_V4_PREFIX,
    v6_prefix: int = DEFAULT_V6_PREFIX,
) -> None:
    """Write on ``events`` (a request's, just parsed) who sent them, as the trust rules read
    it (module docstring): ``seen`` is the request's network origin (``network_origin`` of
    the address the edge reported), used for a browser key's feedback."""
    browser = sender.kind is _BROWSER
    for event in events:
        context = event.context
        if browser and "ip" in context:
            event.context = {k: v for k, v in context.items() if k != "ip"}
        if not is_feedback(event):
            continue
        event.key_id = sender.key_id
        if browser:
            event.origin = seen
        else:
            ip = context.get("ip")
            event.origin = network_origin(ip, v4_prefix, v6_prefix) if isinstance(ip, str) else None
