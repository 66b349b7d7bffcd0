"""Where in a JSON body a problem sits, as a JSONPath, for the errors msgspec cannot place.

msgspec decodes fast but names no field for some failures: nesting past its recursion guard,
a lone UTF-16 surrogate (``"\\ud800"``), a number out of the double range inside an
untyped object (``$[...]``), a syntax error (a byte offset). Only then, on the error path,
``locate`` walks the body with a small scanner that keeps the path of every value and
returns the first problem it finds with the path of the value (or the key) that holds it.
Pure; no recursion, so absurd nesting cannot overflow the stack.
"""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

import msgspec

__all__ = ["MAX_SAFE_INTEGER", "Located", "is_safe_number", "locate", "member_path"]

#: the largest integer every JSON client (a double) reads back exactly: 2**53
MAX_SAFE_INTEGER = 2**53

_SPACE = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = (b"true", b"false", b"null")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Located(NamedTuple):
    """A problem and the JSONPath of the value that holds it (``$.batch[3].properties``)."""

    reason: str
    path: str


def is_safe_number(value: int | float) -> bool:
    """A number a JSON client round-trips: a finite double, an integer within 2**53."""
    if isinstance(value, float):
        return math.isfinite(value)
    return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def member_path(path: str, key: str) -> str:
    """The JSONPath of ``key`` in the object at ``path``: ``$.a.b``, or ``$.a["b c"]``."""
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"


class _Frame:
    __slots__ = ("index", "is_object", "key", "path")

    def __init__(self, path: str, is_object: bool) -> None:
        self.path = path
        self.is_object = is_object
        self.index = 0
        self.key: str | None = None

    def child(self) -> str:
        if self.is_object:
            return member_path(self.path, self.key or "")
        return f"{self.path}[{self.index}]"


def _string(body: bytes, at: int) -> tuple[str | None, int, str | None]:
    """The string starting at ``at``, where it ends, and a problem with it (or None)."""
    match = _STRING.match(body, at)
    if match is None:
        return None, at, "unterminated string"
    try:
        text = json.loads(match.group())
    except (ValueError, UnicodeDecodeError) as exc:
        return None, match.end(), f"invalid string: {exc}"
    if _SURROGATE.search(text):
        return text, match.end(), "a lone UTF-16 surrogate (\\ud800-\\udfff) is not text"
    return text, match.end(), None


def _number(token: bytes) -> str | None:
    text = token.decode()
    if len(text.lstrip("-")) > 17 and not any(c in text for c in ".eE"):
        return f"integer {text[:24]} is beyond 2**53, which JSON clients cannot read back exactly"
    value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
    if is_safe_number(value):
        return None
    if isinstance(value, int):
        return f"integer {text[:24]} is beyond 2**53, which JSON clients cannot read back exactly"
    return f"number {text[:24]} is outside the double range"


def locate(body: bytes, max_depth: int | None = None, offset: int = 0) -> Located | None:
    """The first problem in ``body`` with its path: a syntax error, a container more than
    ``max_depth`` levels below the objects at depth ``offset`` (a message's properties sit
    3 deep in a batch: the body, ``batch``, the message), reported at the container that
    goes too deep; a lone surrogate in a string or key; a number JSON clients cannot
    round-trip. None when the scanner finds nothing."""
    stack: list[_Frame] = []
    pos = _SPACE.match(body, 0).end()  # type: ignore[union-attr]  # matches the empty string
    path = "$"
    expect_value = True
    while True:
        pos = _SPACE.match(body, pos).end()  # type: ignore[union-attr]
        if expect_value:
            if pos >= len(body):
                return Located("the body ends where a value was expected", path)
            char = body[pos : pos + 1]
            if char in (b"{", b"["):
                if max_depth is not None and len(stack) > max_depth + offset:
                    return Located(f"nested deeper than {max_depth} levels", stack[-1].path)
                stack.append(_Frame(path, char == b"{"))
                pos = _SPACE.match(body, pos + 1).end()  # type: ignore[union-attr]
                closing = b"}" if char == b"{" else b"]"
                if body[pos : pos + 1] == closing:
                    stack.pop()
                    pos += 1
                    expect_value = False
                    continue
                if char == b"{":
                    located = _read_key(body, pos, stack[-1])
                    if isinstance(located, Located):
                        return located
                    pos = located
                path = stack[-1].child()
                continue
            if char == b'"':
                _, pos, problem = _string(body, pos)
                if problem:
                    return Located(problem, path)
            elif match := _NUMBER.match(body, pos):
                problem = _number(match.group())
                if problem:
                    return Located(problem, path)
                pos = match.end()
            elif literal := next((w for w in _LITERALS if body.startswith(w, pos)), None):
                pos += len(literal)
            else:
                return Located(f"unexpected character at byte {pos}", path)
            expect_value = False
            continue
        if not stack:
            if pos < len(body):
                return Located(f"trailing characters at byte {pos}", "$")
            return None
        frame = stack[-1]
        char = body[pos : pos + 1]
        if char == b",":
            pos = _SPACE.match(body, pos + 1).end()  # type: ignore[union-attr]
            frame.index += 1
            if frame.is_object:
                located = _read_key(body, pos, frame)
                if isinstance(located, Located):
                    return located
                pos = located
            path = frame.child()
            expect_value = True
        elif char == (b"}" if frame.is_object else b"]"):
            stack.pop()
            pos += 1
        else:
            return Located(f"expected ',' or a closing bracket at byte {pos}", frame.path)


def _read_key(body: bytes, pos: int, frame: _Frame) -> int | Located:
    """Read ``"key":`` at ``pos`` into ``frame``; the position after the colon."""
    if body[pos : pos + 1] != b'"':
        return Located(f"expected a quoted key at byte {pos}", frame.path)
    key, pos, problem = _string(body, pos)
    if problem:
        return Located(f"key: {problem}", member_path(frame.path, key or ""))
    frame.key = key
    pos = _SPACE.match(body, pos).end()  # type: ignore[union-attr]
    if body[pos : pos + 1] != b":":
        return Located(f"expected ':' after a key at byte {pos}", frame.child())
    return pos + 1
