"""What every process runs on: the Celery app, per-process resources (settings, pool, Redis,
vault), the boot check of the Procfile processes, the bulk step sender and the Flower
launcher.

May import `config`, `worker.domain`, `worker.support` and `worker.store`.
"""
