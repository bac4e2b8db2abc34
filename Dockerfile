# The application image: the worker and the API (docker-compose.yml runs both from it).
# The embedded servers are not installed: in containers Kafka, Postgres and Redis are services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p core streams api cli embedded \
    && touch core/__init__.py streams/__init__.py api/__init__.py cli/__init__.py embedded/__init__.py \
    && pip install . \
    && pip uninstall -y interaction-summary

COPY core ./core
COPY streams ./streams
COPY api ./api
COPY cli ./cli
COPY embedded ./embedded
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app app

USER app
EXPOSE 8000 9108
CMD ["interaction-summary", "api", "--host", "0.0.0.0", "--port", "8000"]
