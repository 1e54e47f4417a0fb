"""The callback of a Cloud link through an OAuth 2.0 app: Atlassian's consent page redirects
the operator here with `code` and `state` (or `error`), and the link is completed
(`worker.jira.consent`); one small HTML page says how it went."""

from __future__ import annotations

import html
import logging

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


async def oauth2_callback(request: Request) -> Response:
    params = request.query_params
    code, state, error = params.get("code", ""), params.get("state", ""), params.get("error")
    if error:
        detail = params.get("error_description") or error
        title, message, status = "Link failed", f"Atlassian answered: {detail[:200]}", 400
    elif not code or not state:
        title, message, status = "Link failed", "The callback carries no code or no state.", 400
    else:
        res = request.app.state.receiver.res
        try:
            result = await anyio.to_thread.run_sync(consent.complete, res, code, state)
        except JiraSyncError as exc:
            title, message, status = "Link failed", str(exc), 400
        else:
            title, status = "Jira Cloud linked", 200
            message = linking.completion_message(result)
    log.info("link.oauth2_callback", extra={"status": status})
    page = PAGE.format(title=html.escape(title), message=html.escape(message))
    return HTMLResponse(page, status)
