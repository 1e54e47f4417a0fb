"""Units of work that the steps and the CLI share, over the store, the cache and the broker:
project save and delete (`projects`), replay of failed steps (`replay`), importing reference
data (`loader`) and the read model of a group (`groups`).

May import `worker.store`, `worker.cache`, `worker.domain` and `worker.runtime`; never the
receiver, the CLI or the steps.
"""
