"""Read a request body within a byte limit, un-gzipping when asked; 413 past the limit."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from nextbest.errors import PayloadTooLarge, ValidationError

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
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
        raise PayloadTooLarge(f"uncompressed body is over the {limit}-byte limit")
    return out
