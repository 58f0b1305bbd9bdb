"""Workers: Celery tasks and the download engines (built in later issues)."""
