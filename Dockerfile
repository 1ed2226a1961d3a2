# The academy-consumer image used by docker-compose.yml (production shape; not built in CI here).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libmariadb-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/base.txt -r requirements/db.txt
COPY . .
RUN pip install --no-cache-dir --no-deps .

RUN useradd --create-home academy
USER academy
ENTRYPOINT ["academy-consumer"]
CMD ["consume_academy_events"]
