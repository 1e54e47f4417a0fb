"""jira-sync's runtime: everything a deployed receiver, worker, beat or CLI runs, except the
Celery steps (`tasks/`) and the settings (`config/`).

    runtime/   the Celery app, per-process resources, boot checks, logs, bulk sending
    receiver/  the ASGI webhook receiver: routes, payload reading, tokens, writer, relay
    jira/      the Jira client (OAuth 1.0a, REST) and integration linking and admin
    store/     the PostgreSQL pool and transactions, every SQL statement, the failed-task store
    domain/    pure decisions and the error tree: no I/O
    services/  units of work shared by steps and the CLI (projects, replay, load, group view)
    cache.py   Redis key formats, cache purges and the snowflake claim script
    cli/       the `jira-sync` command line, one module per command group

Dependencies point downwards: domain imports nothing of ours; store, cache and jira build on
domain; runtime wires store into per-process resources; receiver, services, tasks and cli sit
on top. Nothing here imports `devtools/` or `tests/`.
"""
