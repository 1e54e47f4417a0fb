"""The HTTP side: the ASGI app and its routes (`app`), reading a Jira webhook delivery
(`payload`), body signatures of Data Center 10 and Cloud, and the bearer JWT of Cloud's
dynamic webhooks (`signatures`), the OAuth 2.0 consent callback (`consent`), the cache of each
integration's webhook secrets (`authcache`), the group-commit writer and the publisher
(`intake`), what it notices of each integration's secrets (`sightings`), its readiness probe
(`readiness`), their periodic loop (`periodic`), Prometheus metrics (`metrics`) and the HTTP
limits uvicorn runs with (`limits`).

May import `config`, `worker.support`, `worker.cache` (for `/metrics`), `worker.runtime`,
`worker.store`, `worker.domain` (URL tokens among them), `worker.jira.linking` and
`worker.jira.consent` (the OAuth 1.0a and 2.0 callbacks) and `tasks.relay` (sending what it
stored to the broker); never the CLI or the steps themselves.
"""
