"""Building the ``ssh`` command line for gitssh. Pure: no I/O (file existence is passed in).

Rules (Coder's ``cli/gitssh.go``):

* The user's own identities come first, the Coder key last: servers stop after MaxAuthTries
  (default 6) keys, and a user who configured keys for a host meant them to be tried.
* The user's identities are the ``identityfile`` lines of ``ssh -G ARGS`` (``~/`` expanded),
  kept only when the file exists. Passing any ``-i`` disables ssh's defaults, so when
  ``ssh -G`` fails (very old ssh) the default key names are used instead.
* On failure (ssh exits 255) the user is shown the public key and where to add it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_IDENTITY_FILES", "failure_hint", "identity_files", "ssh_argv"]

DEFAULT_IDENTITY_FILES = (
    "~/.ssh/id_rsa", "~/.ssh/id_dsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss",
)


def identity_files(ssh_g_output: str | None, home: str, exists: Callable[[str], bool]) -> list[str]:
    """The user's identity files for the host, from ``ssh -G`` output (None if it failed)."""
    if ssh_g_output is None:
        candidates = list(DEFAULT_IDENTITY_FILES)
    else:
        candidates = [line[len("identityfile "):].strip() for line in ssh_g_output.splitlines()
                      if line.startswith("identityfile ")]
    out: list[str] = []
    for c in candidates:
        path = home + c[1:] if c.startswith("~/") else c
        if path and path not in out and exists(path):
            out.append(path)
    return out


def ssh_argv(user_identities: Sequence[str], coder_key: str | None, args: Sequence[str],
             ssh: str = "ssh") -> list[str]:
    """``ssh -i ID... [-i CODER_KEY] ARGS...`` (no shell involved)."""
    argv = [ssh]
    for ident in [*user_identities, *([coder_key] if coder_key else [])]:
        argv += ["-i", ident]
    return argv + list(args)


def failure_hint(public_key: str, settings_url: str) -> str:
    """Shown on stderr when ssh failed: the public key and where it has to be added."""
    lines = [
        "",
        "Coder authenticates with git using the public key below. Add it to your Git provider",
        "(GitHub: https://github.com/settings/ssh/new, GitLab: https://gitlab.com/-/profile/keys):",
        "",
        "  " + public_key.strip(),
        "",
    ]
    if settings_url:
        lines.append(f"The key is managed in your Coder account settings: {settings_url}")
        lines.append("")
    return "\n".join(lines)
