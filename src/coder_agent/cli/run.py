"""``coder-agent run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..errors import ConfigError
from .common import add_settings_flags, die_config, flag_values


def register(p: argparse.ArgumentParser) -> None:
    add_settings_flags(p)


# Optional packages our libraries import when they happen to be installed, which the daemon never
# uses. Blocked in the daemon's process only (an import of a blocked name raises ImportError, which
# each of them handles), so `run` costs the same whatever else the environment holds:
# * rich, better_exceptions: structlog's pretty tracebacks (our console renderer is plain);
# * click, pygments: httpx's own command-line client, imported by `import httpx` when httpx[cli]
#   is there (a dev tool pulls it in);
# * charset_normalizer, chardet: requests (under the docker SDK) guesses the encoding of bodies
#   without a charset; the engine's API is JSON, which requests decodes as UTF-8 without them
#   (and its fallback is UTF-8 too). ~2.5 MiB of tables for nothing.
# Together a few MiB of RSS (bench.startup and bench.logs_rss measure the daemon as it is).
_UNUSED_OPTIONAL = ("rich", "better_exceptions", "click", "pygments", "charset_normalizer", "chardet")


def _block_unused_optional() -> None:
    import warnings

    for name in _UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    # requests says so once at import; its fallback (UTF-8) is what the engine's API uses anyway.
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")


def run(args: argparse.Namespace) -> int:
    _block_unused_optional()
    from ..memtune import fix_mmap_threshold

    fix_mmap_threshold()  # large buffers (log batches) give their memory back when freed
    from ..config import load_settings

    try:
        settings = load_settings(flag_values(args), config_file=args.config)
    except ConfigError as e:
        return die_config(str(e))
    from ..reaper import split_if_pid1

    if not settings.no_reap:
        split_if_pid1()  # PID 1 (a container entrypoint without an init): PID 1 reaps, the child runs on
    from ..daemon import EXIT_CONFIG, Daemon
    from ..log import configure_logging

    try:
        redactor = configure_logging(
            fmt=settings.log_format, level=settings.log_level,
            log_file=settings.log_dir / "coder-agent.log", stream=sys.stderr,
            retention=settings.log_retention,
            extra_files={"human": settings.log_human, "json": settings.log_json,
                         "stackdriver": settings.log_stackdriver},
        )
    except OSError as e:  # the log dir cannot be created or written: a setting to fix, not a crash
        if getattr(e, "setting", None):
            return die_config(str(ConfigError(e.setting, f"cannot open {e.filename}: {e.strerror or e}")))  # type: ignore[attr-defined]
        return die_config(str(ConfigError("CODER_AGENT_LOG_DIR",
                                          f"cannot open {settings.log_dir / 'coder-agent.log'}: {e.strerror or e}")))
    for secret in settings.secret_values():
        redactor.add(secret)
    try:
        daemon = Daemon(settings, redactor=redactor, owns_process=True)
        from ..loopstats import new_loop

        # the loop counts its own wake-ups (status: wakeups_per_minute)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(daemon.run())
    except ConfigError as e:
        print(f"coder-agent: configuration error: {redactor.scrub(str(e))}", file=sys.stderr)
        return EXIT_CONFIG
