"""Celery app, beat schedule and thin tasks that take ids and call loopgram.*."""
