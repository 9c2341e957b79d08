# The project image (built FROM the systemd base) with the real unit installed and systemd as
# PID 1. Build context: the repository's systemd/ directory. Used by tests/deploy/test_systemd.py.
ARG BASE
FROM ${BASE}
USER root
COPY coder-agent.service /etc/systemd/system/coder-agent.service
RUN install -d -m 0755 /etc/coder-agent
ENTRYPOINT []
CMD ["/sbin/init"]
STOPSIGNAL SIGRTMIN+3
