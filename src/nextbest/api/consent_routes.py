"""``PUT /v1/customers/{customer_id}/consent``: a customer's consent choices, set by the
customer (a write or browser key with the customer token that binds that userId) or by the
bank's systems (a server or admin key).

The choices become one ``Consent Updated`` track event, ingested like any other (the same
group commit, the same sender checks), so the event log holds them, a replay reproduces
them, and the audit log records the change with who made it (``engine._note_consent``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.responses import Response

from nextbest.api.schemas import ConsentAnswer, ConsentBody
from nextbest.engine import IngestRequest, IngestResult
from nextbest.errors import Forbidden, ValidationError
from nextbest.events.model import EventType
from nextbest.events.parse import decode_json
from nextbest.profile.consent import (
    ConsentGrant,
    LegalBasis,
    apply_consent,
    consent_problems,
)

__all__ = ["consent_event", "put_consent"]

_BASES = ", ".join(b.value for b in LegalBasis)
_ENCODER = msgspec.json.Encoder()


def _payload(body: ConsentBody) -> dict[str, Any]:
    """The body's choices as one consent payload (``profile.consent.apply_consent``);
    ValidationError at the first wrong field."""
    if body.basis not in {b.value for b in LegalBasis}:
        raise ValidationError(f"unknown legal basis; use {_BASES}", "$.basis")
    if not body.purposes and not body.sources:
        raise ValidationError("set at least one purpose or source", "$")
    if "sources" in body.purposes:
        raise ValidationError("sources under every purpose go in $.sources", "$.purposes.sources")
    problems = consent_problems(body.purposes, "$.purposes") if body.purposes else []
    if body.sources:
        problems += consent_problems({"sources": body.sources}, "$")
    if problems:
        path, reason = problems[0]
        raise ValidationError(reason, path)
    payload = dict(body.purposes)
    if body.sources:
        payload["sources"] = dict(body.sources)
    return payload


def consent_event(
    customer_id: str, body: ConsentBody, now: float
) -> tuple[bytes, str, dict[str, ConsentGrant]]:
    """The ``Consent Updated`` message the body becomes (a Segment track message), its
    message id, and the choices it sets."""
    payload = _payload(body)
    message_id = body.messageId or f"consent-{uuid.uuid4().hex}"
    grants: dict[str, ConsentGrant] = {}
    apply_consent({}, grants, payload, at=now, origin=body.origin, basis=body.basis)
    message = {
        "type": "track",
        "event": "Consent Updated",
        "userId": customer_id,
        "messageId": message_id,
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
        "properties": {"purposes": payload, "basis": body.basis, "origin": body.origin},
    }
    return msgspec.json.encode(message), message_id, grants


async def put_consent(ctx: Any) -> Any:
    """The route's handler (``api.app.ROUTES``); ``ctx`` is the app's ``Ctx``."""
    customer_id = ctx.request.path_params["customer_id"]
    # the body is checked first (as every route's): its errors say nothing of any customer
    body: ConsentBody = decode_json(ctx.body, ConsentBody)
    _payload(body)
    if not ctx.sender.may_set_consent_for(customer_id):
        raise Forbidden(
            f"this key may not change the consent of {customer_id!r}: send the customer "
            "token that binds this userId, or use a server key"
        )
    engine = ctx.engine
    now = engine.wall_now()
    message, message_id, grants = consent_event(customer_id, body, now)
    parsed = engine.read_message(EventType.TRACK, message)
    if parsed.rejected:  # the vocabulary refused it: say why, change nothing
        raise parsed.rejected[0].error
    loop = asyncio.get_running_loop()
    future: asyncio.Future[IngestResult] = loop.create_future()

    def settle(result: IngestResult | BaseException) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    engine.submit_with(
        IngestRequest(ctx.sender, parsed, ""),
        lambda result: loop.call_soon_threadsafe(settle, result),
    )
    result = await future
    return Response(
        _ENCODER.encode(
            ConsentAnswer(
                ok=True,
                customer_id=customer_id,
                message_id=message_id,
                at=now,
                grants={k: msgspec.to_builtins(g) for k, g in sorted(grants.items())},
                accepted=result.accepted > 0,
            )
        ),
        media_type="application/json",
    )
