"""The HTTP side: the ASGI app and its routes (`app`), reading a Jira webhook delivery
(`payload`), webhook URL tokens (`tokens`), body signatures of Data Center 10
(`signatures`), the secret cache and the group-commit writer (`intake`), what it notices of
each integration's secrets (`sightings`), its readiness probe (`readiness`), their periodic
loop (`periodic`), sending stored deliveries to the broker (`relay`) and the HTTP limits
uvicorn runs with (`limits`).

May import `worker.runtime`, `worker.store`, `worker.domain`, `worker.jira.linking` (the
OAuth callback) and `tasks.pipeline` (the names of the first steps); never the CLI.
"""
