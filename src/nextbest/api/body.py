"""Read a request body within a byte limit, un-gzipping when asked; 413 past the limit.

The limit bounds the bytes received and the bytes inflated alike: a small gzip body is never
inflated past it (a body that carries its own key is read within the small browser limit,
so at most that much is inflated before the key is checked).
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from nextbest.errors import PayloadTooLarge, ValidationError

__all__ = ["read_body"]


async def read_body(request: Request, limit: int, what: str = "body") -> bytes:
    """The body, inflated if gzip: PayloadTooLarge when it (or what it inflates to) is over
    ``limit`` bytes; ``what`` names it in the message."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower().strip()
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
