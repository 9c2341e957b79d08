# coder-agent as a container's entrypoint.
#
#   docker build -t coder-agent .                                  # FROM python:3.11-slim (needs PyPI)
#   docker build --build-arg BASE=coder-agent/base:bookworm \
#       --build-arg PIP_INSTALL_ARGS="--no-index --find-links=/tmp/src/build/wheelhouse" \
#       -t coder-agent .                                           # offline, as CI does (see tests/deploy)
#   docker run -e CODER_AGENT_URL=https://coder.example.com -e CODER_AGENT_TOKEN=... coder-agent
#
# PID 1 is tini (Debian's `tini` package), not the daemon: tini reaps every orphan that scripts
# leave behind (no zombies), forwards SIGTERM/SIGINT/SIGHUP to the daemon only (not -g: the daemon
# decides when its scripts' processes are signalled, after the stop scripts ran) and exits with
# the daemon's exit code (0 after a clean stop, 78 for a configuration error). `docker stop`
# gives 10 s by default; raise it (`--stop-timeout`, compose `stop_grace_period`) above
# CODER_AGENT_SHUTDOWN_TIMEOUT when stop scripts need longer.
#
# Logs go to stderr, i.e. `docker logs`: readable lines by default, one JSON object per line with
# CODER_AGENT_LOG_FORMAT=json. The local API listens on /run/coder-agent/api.sock (mode 0600, owned
# by the daemon's user); bind-mount /run/coder-agent to reach it from the host, and run the
# container as the host user's uid (`--user UID:0`) so the host user may open it.
#
# BASE must be Debian-based with python3 >= 3.11 and the venv module (python:3.11-slim, or the
# offline base built by scripts/build-base-image.sh, which already ships tini).
ARG BASE=python:3.11-slim
FROM ${BASE}

# Extra pip options for the install, e.g. an offline wheelhouse inside the build context.
ARG PIP_INSTALL_ARGS=""
# The daemon's user; 1000 matches the usual workspace user of Coder's images.
ARG USER_NAME=coder
ARG USER_UID=1000

# Group 0 may write the daemon's directories as well, so any uid given as --user UID:0 works.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/coder-agent/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CODER_AGENT_API_ADDRESS=unix:/run/coder-agent/api.sock \
    CODER_AGENT_STATE_DIR=/var/lib/coder-agent \
    CODER_AGENT_LOG_DIR=/var/log/coder-agent

RUN set -eu; \
    if ! command -v tini >/dev/null 2>&1; then \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini >/dev/null; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    ln -sf "$(command -v tini)" /usr/local/sbin/tini; \
    getent passwd "$USER_UID" >/dev/null || useradd --create-home --uid "$USER_UID" --shell /bin/bash "$USER_NAME"; \
    install -d -m 0775 -o "$USER_UID" -g 0 /run/coder-agent /var/lib/coder-agent /var/log/coder-agent; \
    python3 -m venv /opt/coder-agent

COPY . /tmp/src
RUN set -eu; \
    /opt/coder-agent/bin/pip install --no-cache-dir --disable-pip-version-check -q $PIP_INSTALL_ARGS /tmp/src; \
    rm -rf /tmp/src; \
    ln -sf /opt/coder-agent/bin/coder-agent /usr/local/bin/coder-agent; \
    coder-agent --version

USER ${USER_UID}
WORKDIR /home/${USER_NAME}
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/sbin/tini", "--", "coder-agent"]
CMD ["run"]
