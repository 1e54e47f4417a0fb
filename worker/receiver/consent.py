"""The callback of a Cloud link through an OAuth 2.0 app: Atlassian's consent page redirects
the operator here with `code` and `state` (or `error`), and the link is completed
(`worker.jira.consent`); one small HTML page says how it went."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from worker.domain.errors import JiraSyncError
from worker.jira import consent, linking

log = logging.getLogger("jira_sync.receiver")

CALLBACK_PATH = consent.OAUTH2_CALLBACK_PATH

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>jira-sync: {title}</title></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


async def finish_link(
    complete: Callable[[], linking.LinkResult], linked_title: str, event: str
) -> Response:
    """Run a link's completion (in a thread: it calls Jira) and answer the operator's browser
    with one small page saying how it went."""
    try:
        result = await anyio.to_thread.run_sync(complete)
    except JiraSyncError as exc:
        return link_page("Link failed", str(exc), 400, event)
    return link_page(linked_title, linking.completion_message(result), 200, event)


def link_page(title: str, message: str, status: int, event: str) -> Response:
    log.info(event, extra={"status": status})
    page = PAGE.format(title=html.escape(title), message=html.escape(message))
    return HTMLResponse(page, status)


async def oauth2_callback(request: Request) -> Response:
    params = request.query_params
    code, state, error = params.get("code", ""), params.get("state", ""), params.get("error")
    event = "link.oauth2_callback"
    if error:
        detail = params.get("error_description") or error
        return link_page("Link failed", f"Atlassian answered: {detail[:200]}", 400, event)
    if not code or not state:
        return link_page("Link failed", "The callback carries no code or no state.", 400, event)
    res = request.app.state.receiver.res
    return await finish_link(lambda: consent.complete(res, code, state), "Jira Cloud linked", event)
