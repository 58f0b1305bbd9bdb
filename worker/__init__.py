"""The download workers: the Celery app and its task, the pipeline that runs one file, and
the download engines (`worker.engine`, plain Python)."""
