"""The daemon: ``greencpn run`` runs the control step every slot, and ``greencpn status``.

* :mod:`~greencpn.daemon.core` — :class:`Daemon`: scheduler, signals, modes, reload, exit;
* :mod:`~greencpn.daemon.schedule` — the slot-aligned APScheduler trigger;
* :mod:`~greencpn.daemon.settings` — ``[daemon]`` in control.toml;
* :mod:`~greencpn.daemon.leader` — etcd leader election and the controller's fence;
* :mod:`~greencpn.daemon.metrics`, :mod:`~greencpn.daemon.http` — Prometheus, /healthz, /readyz;
* :mod:`~greencpn.daemon.cli` — the ``run`` and ``status`` subcommands.

See docs/daemon.md.
"""
