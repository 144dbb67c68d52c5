# The receiver and the worker, for docker compose. The broker is the official
# apache/kafka image there; `engagement broker` is for machines without Docker.
FROM python:3.11-slim

WORKDIR /srv/engagement
COPY pyproject.toml README.md ./
COPY app ./app
COPY producers ./producers
COPY analytics ./analytics
COPY engagement ./engagement
RUN pip install --no-cache-dir .

VOLUME /data
ENTRYPOINT ["engagement"]
