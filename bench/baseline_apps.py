"""The receiver's baselines, served by the same uvicorn command as the product:

- `bench.baseline_apps:naive`: calls Celery's `delay()` per request (no durable store);
- `bench.baseline_apps:lpush`: only LPUSHes the body to Redis (a floor: no checks at all).
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bench.tasks import naive_receive

PATH = "/extensions/jira-server/issue-updated/{token}/"
LPUSH_KEY = "bench:lpush"
ACCEPTED = {"status": "accepted"}


async def healthz(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def naive_handler(request: Request) -> JSONResponse:
    body = (await request.body()).decode()
    ident = request.headers.get("x-atlassian-webhook-identifier", "")
    # The naive way: delay() right in the handler (it blocks the loop on the broker socket).
    naive_receive.delay(body, {"identifier": ident})
    return JSONResponse(ACCEPTED, status_code=202)


naive = Starlette(routes=[Route(PATH, naive_handler, methods=["POST"]), Route("/healthz", healthz)])


_client: aioredis.Redis | None = None


def _redis() -> aioredis.Redis:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    return _client


async def lpush_handler(request: Request) -> JSONResponse:
    await _redis().lpush(LPUSH_KEY, await request.body())
    return JSONResponse(ACCEPTED, status_code=202)


lpush = Starlette(routes=[Route(PATH, lpush_handler, methods=["POST"]), Route("/healthz", healthz)])
