"""The agent's SSH server: what ``coder ssh``, VS Code / JetBrains Remote-SSH, ``sftp`` and ``scp``
talk to on the tunnel's ports 1 and 22 (Coder's Go ``agent/agentssh``).

* :mod:`.policy` — pure: session type, file-transfer blocking, argv, exit status, environment,
  MOTD, the host key seed.
* :mod:`.session` — one session's command: spawn (PTY or pipes, own process group), copy, resize,
  signal, hang up.
* :mod:`.server` — :class:`~.server.SshServer` on asyncssh, listening on loopback; the tunnel
  splices its connections there and registers which tunnel peer each one is.

asyncssh is imported by :mod:`.server` only: import it where the server is started.
"""
