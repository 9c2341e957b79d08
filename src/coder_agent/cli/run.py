"""``coder-agent run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..errors import ConfigError
from .common import add_settings_flags, die_config, flag_values


def register(p: argparse.ArgumentParser) -> None:
    add_settings_flags(p)


# structlog imports these at import time when they are installed (pretty tracebacks): ~5 MiB of
# RSS and 0.1 s of start-up a daemon never uses (our console renderer is plain). Blocked for the
# daemon's process only, so `run` costs the same whether or not a dev tool pulled them in.
_UNUSED_OPTIONAL = ("rich", "better_exceptions")


def run(args: argparse.Namespace) -> int:
    for name in _UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from ..config import load_settings

    try:
        settings = load_settings(flag_values(args), config_file=args.config)
    except ConfigError as e:
        return die_config(str(e))
    from ..reaper import split_if_pid1

    split_if_pid1()  # PID 1 (a container entrypoint without an init): PID 1 reaps, the child runs on
    from ..daemon import EXIT_CONFIG, Daemon
    from ..log import configure_logging

    try:
        redactor = configure_logging(
            fmt=settings.log_format, level=settings.log_level,
            log_file=settings.log_dir / "coder-agent.log", stream=sys.stderr,
            retention=settings.log_retention,
        )
    except OSError as e:  # the log dir cannot be created or written: a setting to fix, not a crash
        return die_config(str(ConfigError("CODER_AGENT_LOG_DIR",
                                          f"cannot open {settings.log_dir / 'coder-agent.log'}: {e.strerror or e}")))
    for secret in settings.secret_values():
        redactor.add(secret)
    try:
        daemon = Daemon(settings, redactor=redactor, owns_process=True)
        return asyncio.run(daemon.run())
    except ConfigError as e:
        print(f"coder-agent: configuration error: {redactor.scrub(str(e))}", file=sys.stderr)
        return EXIT_CONFIG
