"""The ASGI webhook receiver: authenticate, unpack, store durably, enqueue. Nothing else.

    uvicorn worker.receiver.app:app --loop uvloop --http httptools

Also `GET /metrics` (Prometheus text, `metrics`): to loopback clients, or with the basic-auth
credentials of METRICS_BASIC_AUTH when that is set.

A 202 is sent only after the delivery's row is committed. Rows are written by a few
"flusher" coroutines that take whatever requests are waiting and insert them in one
statement (group commit), so throughput grows with load instead of with connections.
Publishing to the broker happens after the answer, in the background; if the broker is
down the rows stay `received` and the beat sweep sends them later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from celery import Celery
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from worker.domain import tokens
from worker.domain.errors import BadPayload
from worker.domain.event import read_event
from worker.jira import linking
from worker.jira.linking import CALLBACK_PATH, WEBHOOK_PREFIX
from worker.receiver import consent, limits, metrics, payload, signatures
from worker.receiver.authcache import AuthCache, WebhookAuth
from worker.receiver.intake import DeliveryWriter, Publisher, Sender
from worker.receiver.readiness import Readiness
from worker.receiver.sightings import Sightings
from worker.runtime.resources import Resources, open_resources
from worker.store.db import open_async_pool
from worker.store.queries import deliveries as q
from worker.support.classify import classify
from worker.support.logs import configure_logging

log = logging.getLogger("jira_sync.receiver")

RETRY_AFTER_S = 5
# A token that fails against a cached entry this old is checked against fresh secrets once.
AUTH_REFRESH_AFTER_S = 0.5
VERIFIED_TOKENS_MAX = 10_000


def _json(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type="application/json")


# One answer for every authentication failure: it must not reveal which check failed.
UNAUTHORIZED = {"error": "unauthorized", "detail": "invalid or unknown webhook token"}


async def _read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise payload.Refused(413, "payload_too_large", f"body larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Gone mid-body (or cut off by the read timeout): nothing stored, nobody to answer.
            raise payload.Refused(400, "client_disconnected", "the client left before its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise payload.Refused(413, "payload_too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _AnyText(PathConvertor):
    """Matches any token text, newlines included, so every bad token reaches the 401."""

    regex = r"[\s\S]*"


register_url_convertor("anytext", _AnyText())


# -- the app ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    """What the receiver opens once per process and every request uses."""

    res: Resources
    celery: Celery
    auth: AuthCache
    writer: DeliveryWriter
    publisher: Publisher
    gauges: metrics.StoreGauges
    sightings: Sightings
    readiness: Readiness
    # Tokens that verified with an integration's current secret, and the cache entry they
    # verified against (only valid tokens get in, so its size is the number of integrations).
    verified: dict[str, tuple[str, WebhookAuth]] = field(default_factory=dict)

    async def authenticate(self, token: str) -> WebhookAuth | None:
        """The integration a token belongs to, if it verifies and the integration is active."""
        known = self.verified.get(token)
        if known is not None:
            # Verified against this very entry of the cache: no parse, no HMAC again. A
            # reloaded entry (a rotation, a disable) is a new object, so this check lapses.
            external_id, checked = known
            auth = await self.auth.get(external_id)
            if auth is checked and auth is not None and auth.active:
                return auth
        try:
            external_id = tokens.claimed_id(token)
        except tokens.InvalidToken:
            return None
        auth = await self.auth.get(external_id)
        used = tokens.matching(token, auth.secrets if auth else ())
        if used == 0 and auth is not None:
            if len(self.verified) >= VERIFIED_TOKENS_MAX:
                self.verified.clear()
            self.verified[token] = (external_id, auth)
        if (
            used is None
            and auth is not None
            and self.auth.age_s(external_id) > AUTH_REFRESH_AFTER_S
        ):
            auth = await self.auth.get(external_id, refresh=True)  # a rotation may be newer
            used = tokens.matching(token, auth.secrets if auth else ())
        if used is None or auth is None or not auth.active:
            return None
        if used > 0:
            self.sightings.previous_secret(auth.integration_id)
        return auth

    async def signed(self, headers: Headers, raw: bytes, auth: WebhookAuth) -> bool:
        """Whether the body's signature verifies, or may be left out (not required, none sent).
        The first signed delivery after a registration makes the signature required."""
        sent = signatures.sent(headers, auth)
        if not (sent or auth.require_signature):
            return True
        used = signatures.matching(raw, sent, auth.signing_secrets, bearer=auth.bearer)
        if used is None and self.auth.age_s(auth.external_id) > AUTH_REFRESH_AFTER_S:
            fresh = await self.auth.get(auth.external_id, refresh=True)  # a rotation may be newer
            used = (
                None
                if fresh is None
                else signatures.matching(raw, sent, fresh.signing_secrets, bearer=fresh.bearer)
            )
        if used is None:
            log.info(
                "payload.bad_signature",
                extra={"integration_id": auth.integration_id, "signature_headers": len(sent)},
            )
            self.sightings.refused(auth.integration_id)
            return False
        if used > 0:
            self.sightings.previous_secret(auth.integration_id)
        if not auth.signature_seen:
            self.sightings.signed(auth.integration_id)
        return True

    async def accept(
        self, headers: Headers, receive: Receive, token: str
    ) -> tuple[int, dict[str, Any], int | None]:
        """The answer to one delivery (status, JSON body) and the id it was stored under."""
        auth = await self.authenticate(token)
        if auth is None:
            return 401, UNAUTHORIZED, None
        if not payload.is_json_type(headers.get("content-type", "")):
            raise payload.Refused(
                415, "unsupported_media_type", "content type must be application/json"
            )
        raw = await _read_body(headers, receive, self.res.settings.webhook_body_limit_bytes)
        # Only an integration that signs (Data Center 10) pays for the HMAC, before parsing.
        if (auth.signing_secrets or auth.require_signature) and not await self.signed(
            headers, raw, auth
        ):
            return 401, UNAUTHORIZED, None
        text, body = payload.parse_body(raw)
        try:
            event = read_event(body)
        except BadPayload as exc:
            raise payload.Refused(400, "bad_request", str(exc)) from None
        if event is None:
            metrics.IGNORED.inc()
            return 200, IGNORED, None
        kept = {k: payload.clean_header(v) for k in payload.KEPT_HEADERS if (v := headers.get(k))}
        identifier = headers.get("x-atlassian-webhook-identifier", "").strip()
        delivery = q.NewDelivery(
            integration_id=auth.integration_id,
            dedupe_key=payload.dedupe_key(auth.integration_id, identifier or None, body),
            body=text,
            headers=kept,
            issue_key=event.issue_key,
            event_ts=event.event_ts,
        )
        delivery_id = await self.writer.store(delivery)
        if delivery_id is None:
            metrics.DUPLICATE.inc()
            return 200, DUPLICATE, None
        metrics.ACCEPTED.inc()
        self.publisher.submit(delivery_id)
        return 202, {"status": "accepted", "delivery": str(delivery_id)}, delivery_id


IGNORED = {"status": "ignored"}
DUPLICATE = {"status": "duplicate"}
UNAVAILABLE = {"error": "unavailable", "detail": "the delivery store is unreachable; retry later"}
JSON_TYPE = (b"content-type", b"application/json")


def _receiver(request: Request) -> Receiver:
    receiver: Receiver = request.app.state.receiver
    return receiver


async def issue_updated(receiver: Receiver, scope: Scope, receive: Receive, send: Send) -> None:
    """The one hot endpoint, as a bare ASGI handler: no router, no Request or Response objects
    (they were an eighth of the receiver's CPU under load)."""
    started = time.perf_counter()
    token = scope["path"][len(WEBHOOK_PREFIX) :].strip("/")
    delivery_id = None
    extra_headers: list[tuple[bytes, bytes]] = []
    try:
        status, data, delivery_id = await receiver.accept(Headers(scope=scope), receive, token)
    except payload.Refused as exc:
        status, data = exc.status, {"error": exc.error, "detail": exc.detail}
    except Exception as exc:
        if classify(exc).retryable:
            log.warning("payload.store_unavailable", extra={"error": type(exc).__name__})
            status, data = 503, UNAVAILABLE
            extra_headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        else:
            log.exception("http.internal_error", extra={"path": WEBHOOK_PREFIX})
            status, data = 500, INTERNAL
    body = json.dumps(data, separators=(",", ":")).encode()
    headers = [JSON_TYPE, (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    duration_s = time.perf_counter() - started
    metrics.observe_request(status, duration_s)
    # Accepted deliveries are logged a batch per line by the writer (`payload.stored`); a
    # line per 2xx request cost ~9% of the receiver's CPU under load. Refusals stay one each.
    level = logging.DEBUG if status < 300 else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "payload.request",
            extra={
                "status": status,
                "delivery_id": delivery_id,
                "duration_ms": round(duration_s * 1000, 2),
            },
        )


INTERNAL = {"error": "internal", "detail": "internal error"}


class ReceiverApp:
    """The ASGI app: POSTs under the webhook prefix go straight to `issue_updated`; the rest
    (the link callback, health, readiness, metrics, errors and the lifespan) to Starlette."""

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self.state = starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith(WEBHOOK_PREFIX)
        ):
            await issue_updated(self.state.receiver, scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


async def healthz(request: Request) -> Response:
    return _json(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    ready, body = _receiver(request).readiness.answer()
    return _json(200 if ready else 503, body)


async def metrics_page(request: Request) -> Response:
    receiver = _receiver(request)
    refusal = _metrics_refusal(request, receiver.res.settings.metrics_basic_auth)
    if refusal is not None:
        return refusal
    try:
        text = await anyio.to_thread.run_sync(metrics.scrape, receiver.gauges)
    except Exception as exc:
        if not classify(exc).retryable:
            raise
        detail = "the delivery store is unreachable; retry later"
        return _json(503, {"error": "unavailable", "detail": detail})
    return Response(text, 200, media_type=metrics.CONTENT_TYPE)


def _metrics_refusal(request: Request, basic_auth: str) -> Response | None:
    """None when the client may read /metrics: it sent METRICS_BASIC_AUTH's credentials, or,
    with no credentials configured, it is on this machine (like Flower: never open)."""
    if basic_auth:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = base64.b64encode(basic_auth.encode())
        if scheme.lower() == "basic" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        return _json(
            401,
            {"error": "unauthorized", "detail": "/metrics needs the METRICS_BASIC_AUTH user"},
            headers={"WWW-Authenticate": 'Basic realm="jira-sync metrics"'},
        )
    # The socket's peer, as the Procfile's HTTP protocol recorded it: never scope["client"],
    # which X-Forwarded-For rewrites under FORWARDED_ALLOW_IPS. Unknown (another server or
    # protocol): refused.
    peer = request.scope.get(limits.PEER_KEY)
    host = str(peer[0]) if peer else ""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    detail = "/metrics answers 127.0.0.1 only; set METRICS_BASIC_AUTH to scrape from elsewhere"
    return _json(403, {"error": "forbidden", "detail": detail})


async def oauth_callback(request: Request) -> Response:
    receiver = _receiver(request)
    oauth_token = request.query_params.get("oauth_token", "")
    if not oauth_token:
        message = "The callback carries no oauth_token."
        return consent.link_page("Link failed", message, 400, "link.callback")
    return await consent.finish_link(
        lambda: linking.complete(receiver.res, oauth_token), "Jira linked", "link.callback"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return _json(status, {"error": "http_error" if status < 500 else "internal", "detail": detail})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("http.internal_error", extra={"path": request.url.path[:40]})
    return _json(500, INTERNAL)


# Inbox inserts in flight at once. Every delivery waiting when a flusher is free goes into its
# one statement (at most intake.BATCH_MAX), so one flusher keeps up with any rate the event loop
# can parse; more only split the same deliveries into more, smaller statements: under wrk's
# load one flusher took 0.17 ms of CPU per 202 against 0.18 for two and 0.19 for four.
FLUSHERS = 1


def create_app(
    res: Resources | None = None,
    celery: Celery | None = None,
    configure_logs: bool = True,
    flushers: int | None = None,
) -> ReceiverApp:
    """The receiver app. Resources given by the caller are not closed on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from config.settings import get_settings

        own = res is None
        resources = res or open_resources(get_settings())
        if configure_logs:
            configure_logging(resources.settings.log_level)
            _quiet_uvicorn()
        if celery is None:
            from worker.runtime.app import app as celery_app
        else:
            celery_app = celery
        count = flushers or FLUSHERS
        # The flushers' connections, one for the publisher (its heartbeat, sends set back) and
        # one spare, so that neither waits on the other.
        inbox = await open_async_pool(resources.settings.database_url, max_size=count + 2)
        sender = Sender()
        receiver = Receiver(
            res=resources,
            celery=celery_app,
            auth=AuthCache(resources),
            writer=DeliveryWriter(inbox, count, sender),
            publisher=Publisher(
                inbox, celery_app, sender, resources.settings.receiver_silent_after_s / 6
            ),
            gauges=metrics.StoreGauges(resources),
            sightings=Sightings(resources),
            readiness=Readiness(resources, celery_app),
        )
        await anyio.to_thread.run_sync(_warm_up, receiver)
        listener = asyncio.create_task(receiver.auth.listen())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await receiver.auth.listening.wait()
        receiver.writer.start()
        receiver.publisher.start()
        receiver.sightings.start()
        await receiver.readiness.start()
        app.state.receiver = receiver
        log.info("receiver.started", extra={"flushers": count})
        try:
            yield
        finally:
            await receiver.writer.stop()
            await receiver.publisher.stop()
            await receiver.sightings.stop()
            await receiver.readiness.stop()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await inbox.close()
            if own:
                resources.close()

    return ReceiverApp(
        Starlette(
            routes=[
                Route(WEBHOOK_PREFIX + "{token:anytext}", _post_only, methods=["POST"]),
                Route(CALLBACK_PATH, oauth_callback, methods=["GET"]),
                Route(consent.CALLBACK_PATH, consent.oauth2_callback, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/metrics", metrics_page, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
            lifespan=lifespan,
        )
    )


async def _post_only(request: Request) -> Response:
    """Never reached (ReceiverApp answers every POST there): the route makes Starlette answer
    other methods on the webhook path with 405."""
    raise HTTPException(405)


def _warm_up(receiver: Receiver) -> None:
    """Open a database connection and the broker's producer pool before the first request."""
    with contextlib.suppress(Exception):
        receiver.res.pool.wait(timeout=5)
    with contextlib.suppress(Exception), receiver.celery.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1)


def _quiet_uvicorn() -> None:
    # uvicorn's access log would print the token in the URL; we log requests ourselves.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def _json_logs_if_served_by_uvicorn() -> None:
    # uvicorn sets up its own text logging before importing the app; switching to JSON here
    # (not only in the lifespan) keeps even its start-up lines one JSON object per line.
    if logging.getLogger("uvicorn").handlers:
        from config.settings import get_settings

        configure_logging(get_settings().log_level)
        _quiet_uvicorn()


_json_logs_if_served_by_uvicorn()
app = create_app()
