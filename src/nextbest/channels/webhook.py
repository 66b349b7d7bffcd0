"""The webhook transport: one signed HTTP POST per attempt (httpx), with a timeout.

Each attempt sends the message's payload as it was enqueued, with

- ``Content-Type: application/json``
- ``Idempotency-Key``: the message's key, the same on every attempt: a receiver that honors
  it acts once however many times a message arrives (at-least-once delivery);
- ``Nextbest-Signature: t=<unix time>,v1=<hex>`` (``channels.signature``), signed anew at
  each attempt with the webhook's secret;
- ``Nextbest-Channel`` (``telephony`` ...), ``Nextbest-Message-Id`` (the outbox id) and
  ``Nextbest-Attempt`` (1, 2 ...), for the receiver's logs.

Redirects are not followed. Nothing here logs, and no ``Delivery.detail`` carries the
secret or the URL (``_scrubbed``): a dead letter's ``last_error`` is safe to show.
"""

from __future__ import annotations

import httpx

from nextbest.channels.port import Delivery, Verdict
from nextbest.channels.retry import verdict_of_status
from nextbest.channels.signature import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature_header
from nextbest.settings import Webhook
from nextbest.store.port import OutboxMessage

__all__ = ["USER_AGENT", "WebhookTransport"]

USER_AGENT = "nextbest-outbox/1"
#: characters of a refusing receiver's answer kept in ``last_error``
_ANSWER_CHARS = 200


class WebhookTransport:
    """Delivers to one webhook; ``client``: an httpx.Client to send with (default: one of
    its own, closed by ``close``)."""

    def __init__(self, webhook: Webhook, client: httpx.Client | None = None) -> None:
        self.webhook = webhook
        self._own = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False)

    def deliver(self, message: OutboxMessage, now: float) -> Delivery:
        hook = self.webhook
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: message.key,
            SIGNATURE_HEADER: signature_header(hook.secret, int(now), message.payload),
            "Nextbest-Channel": message.channel,
            "Nextbest-Message-Id": str(message.id),
            "Nextbest-Attempt": str(message.attempts),
        }
        try:
            answer = self._client.post(
                hook.url, content=message.payload, headers=headers, timeout=hook.timeout
            )
        except httpx.TimeoutException as exc:
            return Delivery(Verdict.RETRY, f"timed out after {hook.timeout:g} s ({_kind(exc)})")
        except httpx.TransportError as exc:  # refused, reset, DNS, TLS: the network's doing
            return Delivery(Verdict.RETRY, self._scrubbed(f"no answer: {_kind(exc)}: {exc}"))
        verdict = verdict_of_status(answer.status_code)
        detail = f"HTTP {answer.status_code}"
        if verdict is Verdict.DEAD:  # what the receiver said, for whoever fixes the cause
            said = " ".join(answer.text[:_ANSWER_CHARS].split())
            detail = self._scrubbed(f"{detail}: {said}" if said else detail)
        return Delivery(verdict, detail, _retry_after(answer))

    def _scrubbed(self, text: str) -> str:
        for secret in (self.webhook.secret, self.webhook.url):
            text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        if self._own:
            self._client.close()


def _kind(exc: Exception) -> str:
    return type(exc).__name__


def _retry_after(answer: httpx.Response) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not read: None)."""
    raw = answer.headers.get("Retry-After", "").strip()
    if raw.isdigit():
        return float(raw)
    return None
