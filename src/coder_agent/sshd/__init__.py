"""The agent's SSH server: what ``coder ssh``, VS Code / JetBrains Remote-SSH, ``sftp`` and ``scp``
talk to on the tunnel's ports 1 and 22 (Coder's Go ``agent/agentssh``).

* :mod:`.policy` — pure: session type, file-transfer blocking, argv, exit status, environment,
  MOTD, the host key seed.
* :mod:`.session` — one session's command: spawn (PTY or pipes, own process group), copy, resize,
  signal, hang up.
* :mod:`.server` — :class:`~.server.SshServer` on asyncssh, listening on loopback; the tunnel
  splices its connections there and registers which tunnel peer each one is.

* :mod:`.service` — the daemon capability: ``make_service(...)`` → :class:`~.service.SshService`
  (the tunnel's port 1/22 :class:`~coder_agent.tunnelports.TunnelService` and a session counter),
  ``setup(service, status=...)``; starts the server when the tailnet comes up (``want()``) or on
  first use.

asyncssh is imported by :mod:`.server` only, which :mod:`.service` imports in a worker thread
when it starts the server (about 0.4 s warm, 1.1 s cold).

Wiring (the composition root, ``Daemon.compose``)::

    from coder_agent.sshd import service as sshd

    ssh = sshd.make_service(settings=s, command_env=..., priority=..., manifests=..., own_ports=...,
                            reports=daemon.connection_reports)
    services += sshd.setup(ssh, status=status)
    tunnel_services[1] = tunnel_services[22] = ssh   # the tailnet splices there (tunnelports)
    network.on_engine.append(lambda _engine: ssh.want())  # ready before the first connection
    # stats: ssh.session_counts() -> {"ssh": n, "vscode": n, "jetbrains": n}
"""
