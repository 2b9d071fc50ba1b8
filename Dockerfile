# syntax=docker/dockerfile:1
#
# One FleetDeck image for every process; the command picks the role:
#   docker run --rm fleetdeck:local streams | ui --host 0.0.0.0 | agent | schemas export DIR
# docker-compose.yml shows them together (scale-out topology).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its pinned dependencies in a virtualenv -------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/fleetdeck/bin:$PATH
RUN python -m venv /opt/fleetdeck
WORKDIR /src

# Dependencies first, in their own layer, so editing the source does not reinstall them:
# the [project] dependencies of pyproject.toml, pinned by constraints.txt.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; \
print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

# Then the project itself (what .dockerignore lets through: the packages and their data).
COPY . .
RUN pip install -c constraints.txt . \
 && fleetdeck --help > /dev/null

# --- runtime: the virtualenv only, run by a non-root user ------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/fleetdeck/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Home and working directory of the user: relative data directories (the Faust worker's
# .fleetdeck/streams by default) land in a writable place.
RUN groupadd --system --gid 10001 fleetdeck \
 && useradd --system --uid 10001 --gid fleetdeck --home-dir /var/lib/fleetdeck --create-home \
        --shell /usr/sbin/nologin fleetdeck

COPY --from=build /opt/fleetdeck /opt/fleetdeck

USER fleetdeck:fleetdeck
WORKDIR /var/lib/fleetdeck

# Dashboard (`fleetdeck ui --host 0.0.0.0 --port 8000`); the Faust worker's web port, when
# FLEETDECK_WEB_PORT turns it on, is 6066 in docker-compose.yml.
EXPOSE 8000

ENTRYPOINT ["fleetdeck"]
CMD ["--help"]
