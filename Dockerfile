# syntax=docker/dockerfile:1
# The standalone academy-consumer image (docker-compose.yml; docs/how-tos/deploy-on-kubernetes.md).
#
#   docker build -t academy-consumer .
#   docker run --rm academy-consumer --help
#
# Two stages: `build` compiles (mysqlclient needs gcc and the MariaDB client headers) and builds a wheel of
# the package and of every dependency, with the pins of requirements/base.txt and db.txt as constraints;
# the runtime stage installs those wheels only (no index, no compiler, no headers), with the extras of the
# standalone service: `standalone` (dj-database-url, prometheus-client), `postgresql` and `mysql` (the
# drivers). The development stack is never installed. Its commands are checked without a Docker engine by
# tests/test_image.py (the build stage's wheel, the runtime install, the CMD and the migrate one-shot) and
# the file by hadolint (`make quality`, .hadolint.yaml).
#
# Python 3.11: the interpreter requirements/*.txt are compiled with (`make upgrade`) and `make test` runs on.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libmariadb-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The pins first: the dependency wheels are rebuilt only when they change, not with every source change.
COPY requirements/base.txt requirements/db.txt requirements/
COPY pyproject.toml setup.cfg README.md ./
COPY signals/ signals/
COPY academy_consumer/ academy_consumer/
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --constraint requirements/base.txt --constraint requirements/db.txt \
        ".[standalone,postgresql,mysql]"

FROM ${PYTHON_IMAGE} AS runtime
# libmariadb3: the client library mysqlclient links to (its headers and the compiler stayed in `build`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/academy-consumer --create-home academy
# The wheels are mounted from `build` for this one step, so they take no layer of the image. --no-index: the
# wheels built there, with their pinned versions, are all pip can install (hadolint cannot see that: DL3013).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "academy-consumer[standalone,postgresql,mysql]"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ACADEMY_CONSUMER_METRICS_HOST=0.0.0.0 \
    ACADEMY_CONSUMER_METRICS_PORT=9102
# The working directory is the user's own: a SQLite DATABASE_URL (sqlite:///academy_consumer.sqlite3, the
# default) is written here; production sets DATABASE_URL to PostgreSQL or MySQL/MariaDB.
WORKDIR /var/lib/academy-consumer
USER 10001:10001
# /metrics for Prometheus, /healthz (liveness) and /readyz (readiness) of consume_academy_events.
EXPOSE 9102
ENTRYPOINT ["academy-consumer"]
CMD ["consume_academy_events"]
