"""What every process runs on: the Celery app, per-process resources (settings, pool, Redis,
vault), the boot check of the Procfile processes, JSON logs, the bulk step sender and the
Flower launcher.

May import `config`, `worker.store` and `worker.domain`. `logs` imports nothing of ours, so
every other package may use it.
"""
