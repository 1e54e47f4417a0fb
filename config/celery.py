"""The Celery settings module: queues, routes, acks, retries, events."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from config.settings import Settings

QUEUE_INBOUND = "jira_sync.inbound"
QUEUE_SIDE_EFFECTS = "jira_sync.side_effects"
QUEUE_PROJECTS = "jira_sync.projects"
QUEUE_MAINTENANCE = "jira_sync.maintenance"
ALL_QUEUES = (QUEUE_INBOUND, QUEUE_SIDE_EFFECTS, QUEUE_PROJECTS, QUEUE_MAINTENANCE)
# RabbitMQ only: where a message goes once it was delivered BROKER_DELIVERY_LIMIT times
# without being acknowledged (a poison message killing its worker each time). No worker
# consumes it; the beat task drain_dead_letters moves it into the failed-task store.
DEAD_LETTER_EXCHANGE = "jira_sync.dead_letter"
QUEUE_DEAD_LETTER = "jira_sync.dead_letter"

# Task names are part of the interface (Flower, the failed-task store, replay): never rename.
ROUTES = {
    "jira_sync.inbound.*": {"queue": QUEUE_INBOUND},
    "jira_sync.effects.*": {"queue": QUEUE_SIDE_EFFECTS},
    "jira_sync.projects.*": {"queue": QUEUE_PROJECTS},
    "jira_sync.maintenance.*": {"queue": QUEUE_MAINTENANCE},
}

SWEEP_INTERVAL_S = 15.0
DYNAMIC_WEBHOOK_CHECK_S = 3600.0
UNACKED_RESTORE_INTERVAL_S = 2


def dead_letter_queue() -> Queue:
    """The RabbitMQ queue that holds messages past their delivery limit."""
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="fanout")
    return Queue(QUEUE_DEAD_LETTER, exchange, queue_arguments={"x-queue-type": "quorum"})


def _queues(settings: Settings) -> list[Queue]:
    if not settings.broker_is_amqp:
        exchange = Exchange("jira_sync", type="direct")
        return [Queue(name, exchange, routing_key=name) for name in ALL_QUEUES]
    # RabbitMQ: replicated quorum queues with a delivery limit and a dead-letter target.
    # A topic exchange (keys are the queue names) so Celery's native delayed delivery can
    # route countdown retries back to them; quorum queues hold no per-message delay.
    exchange = Exchange("jira_sync", type="topic")
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.broker_delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    return [
        Queue(name, exchange, routing_key=name, queue_arguments=arguments) for name in ALL_QUEUES
    ]


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_amqp:
        # Every publish waits for RabbitMQ's confirm: a 202'd delivery marked queued is on
        # the broker's disk, not in a socket buffer.
        return {"confirm_publish": True}
    return {
        # Longer than any retry countdown, so a delayed retry held by a worker is not
        # handed to a second one; also the bound on recovering a killed worker's tasks.
        "visibility_timeout": settings.broker_visibility_timeout_s,
        # Sweep for expired unacked messages every few seconds (kombu's default is every
        # 10 x 10 s), so a killed worker's tasks return within visibility + this interval.
        "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_S,
        "unacked_restore_throttle": 1,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for every process (receiver, workers, beat, CLI, Flower)."""
    queues = _queues(settings)
    exchange = queues[0].exchange
    return {
        "broker_url": settings.broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        # JSON only: a pickled message on the broker is refused, never executed.
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # A task is acknowledged after it ran; a killed pool child puts it back at once.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": _transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Flower: workers send task events and clients send task-sent events.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": QUEUE_INBOUND,
        "task_default_exchange": exchange.name,
        "task_default_exchange_type": exchange.type,
        "task_default_routing_key": QUEUE_INBOUND,
        "task_queues": queues,
        "task_routes": ROUTES,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "sweep-unqueued-deliveries": {
                "task": "jira_sync.maintenance.sweep_deliveries",
                "schedule": SWEEP_INTERVAL_S,
            },
            "flush-failure-spool": {
                "task": "jira_sync.maintenance.flush_failure_spool",
                "schedule": SWEEP_INTERVAL_S,
            },
            # Cloud ends a dynamic webhook 30 days after its last refresh: checked hourly,
            # refreshed once it has 20 days left (a beat down for days still catches up).
            "refresh-dynamic-webhooks": {
                "task": "jira_sync.maintenance.refresh_dynamic_webhooks",
                "schedule": DYNAMIC_WEBHOOK_CHECK_S,
            },
            # Each integration's own interval decides when its reconciliation is due.
            "reconcile-due-integrations": {
                "task": "jira_sync.maintenance.reconcile_due",
                "schedule": SWEEP_INTERVAL_S,
            },
            **(
                {
                    "drain-dead-letters": {
                        "task": "jira_sync.maintenance.drain_dead_letters",
                        "schedule": SWEEP_INTERVAL_S,
                    }
                }
                if settings.broker_is_amqp
                else {}
            ),
        },
    }
