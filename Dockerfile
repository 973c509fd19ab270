# pypiserver container image.
#
#   docker build -t pypiserver/pypiserver:latest .
#   docker run -p 80:8080 -v ~/packages:/data/packages pypiserver/pypiserver:latest
#
# The container takes the same arguments as `pypi-server` (see
# docker/entrypoint.sh); inside it the server always listens on port 8080.

# --- builder: build the wheel from this tree, install it into a venv --------
FROM python:3.12-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY . /src

# The wheel is built without dependencies, then installed with them, so the
# venv holds exactly what setup.cfg declares and no build tools.
RUN python -m pip wheel --no-deps -w /wheels . \
 && python -m venv /opt/pypiserver \
 && /opt/pypiserver/bin/python -m pip install /wheels/*.whl

# --- final image: the venv, an unprivileged user, nothing else --------------
# Same base as the builder: the venv's python is a symlink to its interpreter.
FROM python:3.12-slim

ENV PATH=/opt/pypiserver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed uid/gid lets hosts chown bind-mounted package directories to match:
#   chown -R 9898:9898 ~/packages
RUN groupadd --system --gid 9898 pypiserver \
 && useradd --system --uid 9898 --gid pypiserver \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin pypiserver \
 && mkdir -p /data/packages \
 && chown -R pypiserver:pypiserver /data

COPY --from=builder /opt/pypiserver /opt/pypiserver
COPY docker/ /docker/
RUN chmod 0755 /docker/entrypoint.sh

# Declared after the chown: a volume keeps the ownership it had here.
VOLUME /data/packages
WORKDIR /data
EXPOSE 8080

# slim has no curl; the interpreter is enough.  urlopen raises on any HTTP
# error or refused connection, which exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

USER pypiserver

ENTRYPOINT ["/docker/entrypoint.sh"]
CMD ["run", "-p", "8080", "/data/packages"]
