"""The customer's own pages (issue 20, item 3): ``GET /v1/me/data`` (what nextbest knows,
where it came from, what it is used for) and ``GET /v1/me/why/{decision_id}`` (why a
decision showed what it showed, and the data it was chosen from), in the customer's language.

Whose pages: the customer a customer token binds (``X-Customer-Token``, or a page's
``customerToken``), whatever key carries it; without a token there is no "me" (400 at
``X-Customer-Token``). A
decision is the customer's when it was made for them or for a device stitched to them;
another customer's decision is answered as unknown (404), so its existence is not told.

The language: ``?lang=`` (da, nl, de, en, es), else the request's ``Accept-Language``, else
the customer's ``language`` or ``locale`` trait, else English.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nextbest.errors import NotFound, ValidationError
from nextbest.profile.identity import ANON_PREFIX
from nextbest.profile.model import Profile
from nextbest.transparency.data import MyData, my_data
from nextbest.transparency.texts import language_of
from nextbest.transparency.why import WhyPage, why

__all__ = ["ME_LANGUAGE_QUERY", "me_data", "me_why"]

#: the routes' text query parameter (``RouteSpec.text_query``)
ME_LANGUAGE_QUERY = (("lang", "the language to answer in: da, nl, de, en or es"),)

_ENCODER = msgspec.json.Encoder()


def _me(ctx: Any) -> str:
    user = ctx.sender.bound_user
    if user is None:
        raise ValidationError(
            "these pages are the customer's own: send the customer token that binds the userId",
            "$.headers.X-Customer-Token",
        )
    return str(user)


def _language(ctx: Any, profile: Profile | None) -> str:
    traits = profile.traits if profile is not None else {}
    return language_of(
        ctx.request.query_params.get("lang"),
        ctx.request.headers.get("accept-language"),
        traits.get("language"),
        traits.get("locale"),
    )


def _why(ctx: Any, user: str, decision_id: str) -> WhyPage:
    engine = ctx.engine
    decision = engine.decision(decision_id)
    # read under the profile's lock: the customer's devices and language, not the profile
    # itself (a fold may change it once the read returns)
    seen = engine.read_profile(
        user, lambda p, now: ({ANON_PREFIX + a for a in p.anonymous_ids}, _language(ctx, p))
    )
    devices, language = seen if seen is not None else (set(), _language(ctx, None))
    if decision is None or (decision.customer_id != user and decision.customer_id not in devices):
        raise NotFound(f"no decision {decision_id!r} of this customer")
    return why(decision, engine.catalog, language)


def _data(ctx: Any, user: str) -> MyData:
    engine = ctx.engine
    page = engine.read_profile(
        user, lambda p, now: my_data(p, engine.catalog, now, _language(ctx, p))
    )
    if page is None:
        raise NotFound("nextbest holds no data about this customer")
    return page  # type: ignore[no-any-return]


async def me_why(ctx: Any) -> Response:
    """``GET /v1/me/why/{decision_id}``."""
    user = _me(ctx)
    decision_id = ctx.request.path_params["decision_id"]
    page = await run_in_threadpool(_why, ctx, user, decision_id)
    return Response(_ENCODER.encode(page), media_type="application/json")


async def me_data(ctx: Any) -> Response:
    """``GET /v1/me/data``."""
    user = _me(ctx)
    page = await run_in_threadpool(_data, ctx, user)
    return Response(_ENCODER.encode(page), media_type="application/json")
