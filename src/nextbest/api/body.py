"""Read a request body within a byte limit, un-gzipping when asked; 413 past the limit. And
the media types a body may come as (415 for any other).

The limit bounds the bytes received and the bytes inflated alike: a small gzip body is never
inflated past it (a body that carries its own key is read within the small browser limit,
so at most that much is inflated before the key is checked). The body is read from the ASGI
``receive`` channel itself, so the ingestion routes (``api.ingest``) and the routes served
through Starlette read alike.
"""

from __future__ import annotations

import zlib

from starlette.types import Receive

from nextbest.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError

__all__ = ["ClientGone", "check_length", "check_media_type", "finish_body", "read_body"]


class ClientGone(Exception):
    """The client closed the connection before it sent its whole body: there is nobody to
    answer."""


async def read_body(
    receive: Receive,
    limit: int,
    what: str = "body",
    *,
    length: str | None = None,
    encoding: str | None = None,
) -> bytes:
    """The body, inflated if gzip: PayloadTooLarge when it (or what it inflates to) is over
    ``limit`` bytes; ``what`` names it in the message. ``length`` and ``encoding``: the
    request's Content-Length and Content-Encoding headers (None: absent). ClientGone when
    the client disconnects first."""
    check_length(limit, what, length)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if message.get("more_body", False) and len(body) <= limit:  # the rest of its pieces
        body = await _rest(receive, body, limit, what)
    return finish_body(body, limit, what, encoding)


def check_length(limit: int, what: str, length: str | None) -> None:
    """PayloadTooLarge when the request's Content-Length (``length``) is over ``limit``:
    checked before any of the body is read."""
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"{what} of {length} bytes is over the {limit}-byte limit")


def finish_body(body: bytes, limit: int, what: str, encoding: str | None) -> bytes:
    """A body received whole (``read_body``, or an HTTP protocol that collected it), within
    ``limit`` and inflated as its Content-Encoding (``encoding``) says."""
    if len(body) > limit:
        raise PayloadTooLarge(f"{what} is over the {limit}-byte limit")
    if encoding is None:
        return body
    encoding = encoding.lower().strip()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ValidationError(f"unsupported Content-Encoding {encoding!r}; use gzip", "$")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValidationError(f"body is not valid gzip: {exc}", "$") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"uncompressed {what} is over the {limit}-byte limit")
    return out


async def _rest(receive: Receive, first: bytes, limit: int, what: str) -> bytes:
    """A body's pieces after its ``first``, joined with it (the same checks)."""
    chunks = [first]
    size = len(first)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_media_type(content_type: str | None) -> None:
    """UnsupportedMediaType unless a body is JSON: ``application/json`` (or a ``+json``
    type), ``text/plain`` (analytics.js sends JSON so, to skip the CORS preflight) or no
    type at all."""
    if content_type is None or content_type == "application/json":
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("", "application/json", "text/plain") or media.endswith("+json"):
        return
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not accepted: send JSON as application/json "
        "(or text/plain, as analytics.js does)"
    )
