# modelpull: one image for the web tier, the workers and the migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MODELS_DIR=/models \
    DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md alembic.ini models.yaml ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Editable: the migrations and the catalog are read from /app.
RUN pip install -e . \
 && useradd --create-home --uid 1000 modelpull \
 && mkdir -p /models /data \
 && chown modelpull:modelpull /models /data

USER modelpull
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["modelpull", "web", "--host", "0.0.0.0", "--port", "8000", "--threads", "32"]
