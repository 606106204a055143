"""``greencpn run`` with the fake controller, as its own process (subprocess tests).

    python run_fake_daemon.py CONFIG STATE_DIR ACTIONS_LOG [--delay S] [--http-port P]

Everything but the controller is the real daemon: settings from control.toml beside CONFIG,
the APScheduler trigger, signals, HTTP, the etcd elector, the exit path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_controller import FakeController  # noqa: E402

from greencpn.clock import SystemClock  # noqa: E402
from greencpn.daemon.core import Daemon  # noqa: E402
from greencpn.daemon.logs import configure  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("state_dir")
    ap.add_argument("actions_log")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--slot-s", type=float, default=None)
    ap.add_argument("--http-port", type=int, default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--json-logs", action="store_true")
    args = ap.parse_args()
    configure(json_logs=args.json_logs)

    def factory(path: Path, **kw: Any) -> FakeController:
        return FakeController(
            path,
            actions_log=Path(args.actions_log),
            action_delay_s=args.delay,
            slot_s=args.slot_s,
            **kw,
        )

    daemon = Daemon(
        args.config,
        state_dir=args.state_dir,
        clock=SystemClock(),
        controller_factory=factory,
        http_port=args.http_port,
    )
    if args.name and hasattr(daemon.elector, "name"):
        daemon.elector.name = args.name
    return daemon.serve()


if __name__ == "__main__":
    sys.exit(main())
