# The gateway's image: `alphintra` is the entrypoint, so one image runs every role of the
# topology (serve, worker, migrate, chain serve, venue serve): deploy/compose.yaml, docs/operations.md.
#   docker build -t alphintra .
#   docker run --rm alphintra --version

ARG PYTHON=python:3.11-slim-bookworm

# Build: the package and its dependencies into /opt/venv, with a compiler for any sdist.
FROM ${PYTHON} AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY gateway gateway
COPY schema schema
COPY plugins plugins
COPY marketplace marketplace
COPY migrations migrations
# Editable on purpose: `alphintra migrate` finds alembic.ini and migrations/ beside the
# package's source (gateway/cli.py ROOT), which a plain wheel install does not ship.
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -e . \
 && /opt/venv/bin/python -m compileall -q gateway schema plugins marketplace

# Runtime: the venv and the sources only, no compiler, as an unprivileged user.
FROM ${PYTHON} AS runtime
# libgomp1: LightGBM's OpenMP; libseccomp2: the plugin sandbox's seccomp layer;
# bubblewrap: the sandbox's namespaces layer where the container runtime allows it.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgomp1 libseccomp2 bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 alphintra \
 && useradd --system --uid 10001 --gid alphintra --home-dir /var/lib/alphintra \
      --create-home --shell /usr/sbin/nologin alphintra \
 && install -d -o alphintra -g alphintra /var/lib/alphintra/chain
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ALPHINTRA_HOST=0.0.0.0 \
    ALPHINTRA_PORT=8000
# Secrets are never baked in: ALPHINTRA_SECRET_KEY_FILE points at a mounted secret.
WORKDIR /var/lib/alphintra
USER alphintra:alphintra
EXPOSE 8000
# /healthz: the process serves. Roles that serve no HTTP (worker, chain, migrate) turn this
# off or replace it (deploy/compose.yaml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ALPHINTRA_PORT', '8000'), timeout=3)"]
ENTRYPOINT ["alphintra"]
CMD ["serve"]
