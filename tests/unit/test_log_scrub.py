"""JSON log lines: valid JSON whatever they carry, task context on each, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.support import logs

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq1\nabc\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure_logging("DEBUG", stream)
    try:
        yield stream
    finally:
        logs.clear_context()
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_registered_secret_is_scrubbed_from_message_extras_and_traceback(
    log_lines: io.StringIO,
) -> None:
    logs.register_secret("s3cr3t-value-123")
    try:
        raise RuntimeError("failed with s3cr3t-value-123")
    except RuntimeError:
        logging.getLogger("t").exception(
            "login s3cr3t-value-123", extra={"detail": {"nested": ["x s3cr3t-value-123"]}}
        )
    text = log_lines.getvalue()
    assert "s3cr3t-value-123" not in text
    [entry] = lines(log_lines)
    assert entry["detail"] == {"nested": ["x ***"]}


def test_line_stays_valid_json_when_an_oauth_header_is_scrubbed(log_lines: io.StringIO) -> None:
    header = 'OAuth oauth_signature="abc%3D", oauth_token="tok123", oauth_version="1.0"'
    logging.getLogger("t").info("request", extra={"headers": {"Authorization": header}})
    [entry] = lines(log_lines)
    shown = entry["headers"]["Authorization"]  # type: ignore[index]
    assert "abc%3D" not in shown and "tok123" not in shown
    assert 'oauth_version="1.0"' in shown


def test_private_key_and_basic_auth_are_scrubbed() -> None:
    text = logs.scrub(f"key {PEM} then Authorization: Basic b3BzOnB3 and redis://:pw@h:1/0")
    assert "MIIEowIBAAKCAQEAq1" not in text
    assert "b3BzOnB3" not in text
    assert ":pw@" not in text


def test_authorize_url_keeps_its_request_token() -> None:
    url = "https://jira.test/plugins/servlet/oauth/authorize?oauth_token=req123"
    assert logs.scrub(url) == url


def test_task_context_is_on_every_line_until_cleared(log_lines: io.StringIO) -> None:
    logs.bind(task_id="t-1", delivery_id=7)
    logs.bind(issue_key="APP-1")
    logging.getLogger("t").info("step.one")
    logging.getLogger("t").info("step.two", extra={"delivery_id": 8})
    logs.clear_context()
    logging.getLogger("t").info("after")
    one, two, after = lines(log_lines)
    assert (one["task_id"], one["delivery_id"], one["issue_key"]) == ("t-1", 7, "APP-1")
    assert two["delivery_id"] == 8  # what the line says wins over the context
    assert "task_id" not in after


def test_a_text_found_clean_is_scrubbed_once_it_holds_a_registered_secret() -> None:
    text = "token=zq8-unit-test-secret-value"
    assert logs.scrub(text) == text  # clean now, and remembered as clean
    logs.register_secret("zq8-unit-test-secret-value")
    assert logs.scrub(text) == "token=***"
