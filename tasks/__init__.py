"""Celery steps and the relay that feeds them. Each step is a thin task around a pure decision;
pipeline.py alone orders them; relay.py sends stored deliveries to their first step.

May import `config` and every `worker` package but the receiver and the CLI.
"""
