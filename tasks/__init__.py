"""Celery steps. Each step is a thin task around a pure decision; pipeline.py orders them."""
