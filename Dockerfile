# The splitter image: one image for capture and every worker (docker-compose.yaml picks the command).
# Build context: the repository root.  Runs as an unprivileged user; settings come from SPLITTER_*
# environment variables (never argv, where `ps` would show passwords); /metrics and /healthz listen on
# SPLITTER_METRICS_PORT (9400).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY splitter ./splitter
COPY connectors ./connectors
# Wheels for splitter and every dependency, so the runtime stage needs no compiler or cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin splitter
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels splitter && rm -rf /wheels
COPY topology.py /app/topology.py
USER splitter
ENV PYTHONUNBUFFERED=1 \
    SPLITTER_TOPOLOGY=/app/topology.py \
    SPLITTER_METRICS_PORT=9400
EXPOSE 9400
# 200 while the component starts or its loop ticks; 503 in retry backoff or when the loop hangs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SPLITTER_METRICS_PORT', '9400'), timeout=2)"]
ENTRYPOINT ["splitter"]
CMD ["run"]
