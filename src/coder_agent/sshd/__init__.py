"""The agent's SSH server: what ``coder ssh``, VS Code / JetBrains Remote-SSH, ``sftp`` and ``scp``
talk to on the tunnel's ports 1 and 22 (Coder's Go ``agent/agentssh``).

* :mod:`.policy` — pure: session type, file-transfer blocking, argv, exit status, environment,
  MOTD, the host key seed.
* :mod:`.session` — one session's command: spawn (PTY or pipes, own process group), copy, resize,
  signal, hang up.
* :mod:`.server` — :class:`~.server.SshServer` on asyncssh, listening on loopback; the tunnel
  splices its connections there and registers which tunnel peer each one is.

asyncssh is imported by :mod:`.server` only: import it where the server is started.

Wiring (the composition root)::

    from coder_agent.sshd.policy import CONNECTION_TYPE, host_key_seed
    from coder_agent.sshd.server import SshServer

    server = SshServer(daemon.command_env, host_key_seed=host_key_seed(owner, workspace, agent),
                       block_file_transfer=settings.block_file_transfer, reporter=reporter,
                       priority=daemon.child_priority)
    port = await server.start()      # add it to the daemon's own ports (not a workspace port)
    # tunnel, per accepted connection on ports 1 and 22: connect to 127.0.0.1:port, then
    server.register_peer(local_port, (peer_ip, peer_port), (agent_ip, 1))   # before any byte
    # stats: server.session_counts() -> {"ssh": n, "vscode": n, "jetbrains": n}
    await server.stop()              # at shutdown: sessions hang up
"""
