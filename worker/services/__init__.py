"""Units of work that the steps and the CLI share, over the store, the cache and the broker:
project save and delete (`projects`), replay of failed steps (`replay`), importing reference
data (`loader`), the read model of a group (`groups`) and the failed-task store that replay
reads (`failures`: a step that gave up, spooled to Redis while PostgreSQL is down).

May import `worker.domain`, `worker.support`, `worker.store`, `worker.cache` and
`worker.runtime`; never the Jira client, the receiver, the CLI or the steps.
"""
