"""The only place that knows the order of steps: it builds and sends the chains.

Inbound: check_changelog -> inbound_sync -> assign | deassign (per group) -> side effects.
Projects: save (slug, id, insert) and delete (settings, outbox + rows, cache purge).
Steps are sent by their stable names, so this module imports no task module.
"""

from __future__ import annotations

from celery import Celery

CHECK_CHANGELOG = "jira_sync.inbound.check_changelog"


def start_delivery(app: Celery, delivery_id: int) -> None:
    """Put a stored delivery's first step on the broker."""
    app.send_task(CHECK_CHANGELOG, kwargs={"delivery_id": delivery_id})
