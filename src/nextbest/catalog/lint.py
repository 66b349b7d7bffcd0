"""Warnings: what loads but may show nothing where a marketer expects something.

A warning does not refuse the catalog (``nextbest check`` prints it and exits 0): a URL
pattern that can match no page, an event name the bank never sends, a schedule that ended
or whose end is ambiguous; and a rule that slows every decision down (one the engine cannot
decide itself, so it runs in the CEL engine each time). Each function here is pure and
returns ``(field path, reason)`` pairs; ``compile_catalog`` places them (file and line) and
marks them warnings.

**Schedules.** ``start`` / ``valid_from`` is inclusive, ``end`` / ``valid_until`` is
exclusive: an offer is live while ``start <= now < end``. A date alone is midnight UTC at
the start of that day, so ``end: 2026-03-31`` stops as March 31 begins (the 31st is not
included); a date-time without an offset is read as UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

from nextbest.catalog.model import CampaignSpec, OfferSpec, SecuritySpec
from nextbest.catalog.when import parse_when
from nextbest.events.names import KNOWN_EVENTS
from nextbest.profile.topics import TopicSpec, pattern_problem
from nextbest.rules.reads import runs_in_cel
from nextbest.rules.typecheck import did_you_mean

__all__ = [
    "Finding",
    "campaign_warnings",
    "cel_rule_warnings",
    "event_vocabulary",
    "kpi_warning",
    "schedule_warnings",
    "security_warnings",
    "topic_warnings",
    "when_text",
]

#: (field path, reason)
Finding = tuple[str, str]


def event_vocabulary(topics: Iterable[TopicSpec], event_weights: Iterable[str]) -> set[str]:
    """The event names the catalog knows: the bank's named events (``events.names``), those
    its topics map to interest and those its profile settings weigh."""
    names = set(KNOWN_EVENTS)
    for topic in topics:
        names.update(topic.events)
    names.update(event_weights)
    return names


def _quoted_hint(name: str, choices: Iterable[str]) -> str:
    return did_you_mean(name, choices, quote="'")


def kpi_warning(name: str, vocabulary: Collection[str], what: str) -> str | None:
    """Why KPI ``name`` may never be seen (``what``: who waits for it), or None."""
    if name in vocabulary:
        return None
    return (
        f"{name!r} is no event the catalog knows{_quoted_hint(name, vocabulary)}: {what}; "
        "known events are the bank's named events, the topics' events and "
        "profile.event_weights"
    )


def campaign_warnings(path: str, camp: CampaignSpec, vocabulary: Collection[str]) -> list[Finding]:
    """A KPI or guardrail naming no event the catalog knows; a running campaign without a
    control group (nothing to measure it against)."""
    out: list[Finding] = []
    at = f"{path}.kpi" if isinstance(camp.kpi, str) else f"{path}.kpi.event"
    reason = kpi_warning(
        camp.primary_kpi.event, vocabulary, "the campaign's results would stay at 0"
    )
    if reason is not None:
        out.append((at, reason))
    for j, (raw, guard) in enumerate(zip(camp.guardrails, camp.guardrail_kpis, strict=True)):
        at = f"{path}.guardrails[{j}]" + ("" if isinstance(raw, str) else ".event")
        reason = kpi_warning(guard.event, vocabulary, "this guardrail would never move")
        if reason is not None:
            out.append((at, reason))
    if camp.control_share == 0 and camp.running:
        out.append(
            (
                f"{path}.control_share",
                "no control group: nothing to compare the campaign's customers with, so its "
                "effect on the KPI cannot be measured; keep a share out (control_share: 0.1)",
            )
        )
    return out


def topic_warnings(path: str, topic: TopicSpec) -> list[Finding]:
    """URL patterns that can match no page, and event names a letter away from a named
    event (``Overdraft Startd``)."""
    out: list[Finding] = []
    for i, pattern in enumerate(topic.url_patterns):
        reason = pattern_problem(pattern)
        if reason is not None:
            out.append((f"{path}.url_patterns[{i}]", reason))
    for i, name in enumerate(topic.events):
        if name not in KNOWN_EVENTS:
            hint = _quoted_hint(name, KNOWN_EVENTS)
            if hint:
                out.append(
                    (
                        f"{path}.events[{i}]",
                        f"{name!r} is no named event{hint}: only an event with exactly this "
                        "name counts as interest",
                    )
                )
    return out


def cel_rule_warnings(rules: Iterable[tuple[str, str | None]]) -> list[Finding]:
    """Each rule (field path, source) the engine cannot decide itself: it runs in the CEL
    engine at every decision that reaches it, which costs about 0.1 ms more a decision
    (``rules.reads.runs_in_cel``: a conversion, a regular expression, a map literal...)."""
    out: list[Finding] = []
    for path, source in rules:
        why = runs_in_cel(source) if source is not None else None
        if why is not None:
            out.append(
                (
                    path,
                    "this rule runs in the CEL engine at every decision that reaches it, "
                    f"about 0.1 ms more a decision: nextbest decides the common forms of rules "
                    f"itself, but not {why}",
                )
            )
    return out


def security_warnings(path: str, security: SecuritySpec) -> list[Finding]:
    """A sensitive kind's URL pattern that can match no page (or matches every page)."""
    out: list[Finding] = []
    for i, kind in enumerate(security.sensitive):
        for j, pattern in enumerate(kind.url_patterns):
            reason = pattern_problem(pattern)
            if reason is not None:
                out.append((f"{path}.sensitive[{i}].url_patterns[{j}]", reason))
    return out


def when_text(moment: float) -> str:
    """``2026-03-31T00:00:00Z``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_date(text: str) -> bool:
    return len(text) <= 10


def _naive(text: str) -> bool:
    if _is_date(text):
        return False
    try:
        return datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return False


def _bound_warnings(
    path: str, names: tuple[str, str], values: tuple[str | None, str | None], what: str
) -> list[Finding]:
    """A date-time without an offset; an end given as a date alone."""
    out: list[Finding] = []
    for name, text in zip(names, values, strict=True):
        if text is not None and _naive(text):
            out.append(
                (
                    f"{path}.{name}",
                    f"{text} has no UTC offset, so it is read as UTC; write {text}Z for UTC "
                    f"or {text}+02:00 for two hours ahead of it",
                )
            )
    end = values[1]
    if end is not None and _is_date(end):
        try:
            day = date.fromisoformat(end)
        except ValueError:
            return out  # reported as an error where the window is read
        after = (day + timedelta(days=1)).isoformat()
        out.append(
            (
                f"{path}.{names[1]}",
                f"{end} is a date: {what} ends at {end}T00:00:00Z, as that day begins, so "
                f"{end} itself is not included ({names[1]} is exclusive, times are UTC); "
                f"write {after} to include it, or a date-time with an offset",
            )
        )
    return out


def schedule_warnings(
    campaigns: Iterable[tuple[str, CampaignSpec]],
    offers: Iterable[tuple[str, OfferSpec]],
    windows: Mapping[str, tuple[float | None, float | None]],
    now: float | None,
) -> list[Finding]:
    """Ambiguous bounds (a date-only end, a time without offset), and with ``now`` the
    schedules that ended already. ``windows``: each offer's live window, its campaign's
    included (``lo >= hi``: never live)."""
    campaigns, offers = list(campaigns), list(offers)
    ended = _ended_warnings(campaigns, offers, now) if now is not None else []
    out: list[Finding] = []
    for path, camp in campaigns:
        out += _bound_warnings(path, ("start", "end"), (camp.start, camp.end), "the campaign")
    for path, offer in offers:
        bounds = (offer.valid_from, offer.valid_until)
        out += _bound_warnings(path, ("valid_from", "valid_until"), bounds, "the offer")
        lo, hi = windows.get(offer.id, (None, None))
        if lo is not None and hi is not None and lo >= hi:
            out.append(
                (
                    f"{path}.valid_from",
                    "the offer's window and its campaign's do not overlap: it is never shown",
                )
            )
    done = {path for path, _ in ended}  # an end that passed: ambiguous no more
    return [f for f in out if f[0] not in done] + ended


def _ended_warnings(
    campaigns: list[tuple[str, CampaignSpec]], offers: list[tuple[str, OfferSpec]], now: float
) -> list[Finding]:
    out: list[Finding] = []
    for path, camp in campaigns:
        if camp.end is None:
            continue
        end = _parsed(camp.end)
        if end is not None and end <= now:
            out.append((f"{path}.end", _ended("the campaign", end, now, "its offers are")))
    for path, offer in offers:
        own = _parsed(offer.valid_until)
        if own is not None and own <= now:
            out.append((f"{path}.valid_until", _ended("the offer", own, now, "it is")))
    return out


def _ended(what: str, end: float, now: float, subject: str) -> str:
    days = int((now - end) // 86_400)
    ago = "today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
    return (
        f"{what} ended {when_text(end)}, {ago} (checked at {when_text(now)}): {subject} "
        "never shown; end is exclusive"
    )


def _parsed(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError:
        return None
