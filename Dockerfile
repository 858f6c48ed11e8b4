# fitnas in a container. In a fitnas checkout:
#   docker build -t fitnas .
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD":/work fitnas dvc repro
#
# The image is the environment: Python, the pinned CPU torch, the dependencies, and fitnas installed
# editable from /work. The project it runs is the checkout mounted at /work, so the code that runs
# is the code DVC hashes in dvc.lock.
#
# Build arguments (the defaults serve users; our CI passes local ones, see scripts/docker-build.sh):
#   BASE          a Debian-based image with Python 3.11+ (venv included)
#   TORCH_SOURCE  where pip finds torch: a package index URL, or a folder of wheels in the build
#                 context (e.g. docker/wheels)
ARG BASE=python:3.11-slim

# The dependency list alone: the build stage below copies just this file, so a change elsewhere in
# pyproject.toml (or in the code) reinstalls nothing.
FROM ${BASE} AS requirements
COPY pyproject.toml /
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /requirements.txt

FROM ${BASE} AS build
ARG TORCH_SOURCE=https://download.pytorch.org/whl/cpu
WORKDIR /build
# docker/ holds build-time inputs that exist only on some machines: ca-certificates.crt (for a
# TLS-intercepting proxy) and local wheels. This stage is thrown away, so neither reaches the image.
COPY docker/ docker/
RUN set -eu; \
    printf '[global]\nno-cache-dir = true\ndisable-pip-version-check = true\n' > pip.conf; \
    if [ -f docker/ca-certificates.crt ]; then echo "cert = /build/docker/ca-certificates.crt" >> pip.conf; fi; \
    case "$TORCH_SOURCE" in \
      http://*|https://*) from="--index-url $TORCH_SOURCE" ;; \
      *) from="--find-links $TORCH_SOURCE" ;; \
    esac; \
    python3 -m venv /opt/venv; \
    PIP_CONFIG_FILE=/build/pip.conf /opt/venv/bin/pip install -q $from torch==2.13.0
ENV PIP_CONFIG_FILE=/build/pip.conf

# setuptools: the final stage installs fitnas with it, offline.
COPY --from=requirements /requirements.txt ./
RUN /opt/venv/bin/pip install -q "setuptools>=68" wheel && /opt/venv/bin/pip install -q -r requirements.txt


FROM ${BASE}
# DVC calls git; a repository mounted from the host belongs to another user, which git accepts
# only when told to.
RUN command -v git >/dev/null \
      || { apt-get update -q && apt-get install -y -q --no-install-recommends git && rm -rf /var/lib/apt/lists/*; }; \
    git config --system --add safe.directory '*'; \
    mkdir -m 1777 /home/fitnas
COPY --from=build /opt/venv /opt/venv
COPY pyproject.toml README.md /work/
COPY src /work/src
COPY stages /work/stages
RUN /opt/venv/bin/pip install -q --no-index --no-deps --no-build-isolation -e /work
# Any user id given with `docker run -u` works: HOME is writable (matplotlib, DVC and git keep files
# there) and USER names it, since /etc/passwd does not (DVC asks for the user's name).
ENV PATH=/opt/venv/bin:$PATH HOME=/home/fitnas USER=fitnas PYTHONUNBUFFERED=1
WORKDIR /work
CMD ["fitnas", "--help"]
