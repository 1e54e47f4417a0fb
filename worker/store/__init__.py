"""PostgreSQL: the connection pool and transactions, the migrations runner, every SQL
statement (`queries/`, one typed function each), credential encryption at rest and the
failed-task store.

May import `worker.domain`, `worker.runtime.logs` (a leaf: log scrubbing) and, for type
hints only, `worker.runtime.resources`; never the receiver, the Jira client, the CLI or the
steps.
"""
