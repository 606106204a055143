"""A REAL Slurm 22.05 cluster on 127.0.0.1 for tests and benchmarks (no pytest needed).

munged, slurmctld and one slurmd (``slurmd -N node1``) with all state in a directory
(``SLURM_CONF``); cloud nodes ``fake[1-4]`` start powered down. greencpn's own
``python -m greencpn.actuate.suspend_resume`` is Slurm's SuspendProgram / ResumeProgram /
ResumeFailProgram; it records each call (JSON lines) and runs a ``command`` hook that plays the
hardware (appends to hw.log). Used by tests/conftest.py (the ``slurm`` fixture) and
bench/bench_jobs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLURM_NEEDED = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "scancel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, pred: Callable[[], object], timeout_s: float = 15.0) -> object:
    """Poll ``pred`` every 0.1 s until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class SlurmCluster:
    dir: Path
    env: dict[str, str]
    record: Path
    hw_log: Path

    @property
    def conf(self) -> Path:
        return Path(self.env["SLURM_CONF"])

    def calls(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(x) for x in self.record.read_text().splitlines() if x.strip()]

    def run(self, *argv: str) -> str:
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=True, timeout=30
        ).stdout


ACCOUNTING_NEEDED = ("mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "sacctmgr", "sacct")


def missing_reason(accounting: bool = False) -> str | None:
    """Why a real cluster (with accounting) cannot start here (None: it can)."""
    needed = SLURM_NEEDED + (ACCOUNTING_NEEDED if accounting else ())
    missing = [b for b in needed if shutil.which(b) is None]
    if missing:
        return (
            f"Slurm binaries missing: {missing} (apt-get install slurmctld slurmd "
            "slurm-client munge" + (" mariadb-server slurmdbd)" if accounting else ")")
        )
    if os.geteuid() != 0:
        return "the real-Slurm cluster runs slurmctld/slurmd as root (SlurmUser=root)"
    return None


def _start_accounting(d: Path, munge_sock: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    """MariaDB + slurmdbd under ``d`` (appended to ``procs``); returns slurmdbd's port."""
    for b in ("mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "sacctmgr"):
        if shutil.which(b) is None:
            raise RuntimeError(f"{b} missing (apt-get install mariadb-server slurmdbd)")
    data, dbsock = d / "mysql", d / "mysql.sock"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    db_port = free_port()
    procs.append(
        subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={dbsock}",
                f"--port={db_port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={d / 'mysqld.pid'}",
                f"--log-error={d / 'mysqld.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_for("mariadb socket", dbsock.exists, 30)
    subprocess.run(
        [
            "mariadb",
            "--no-defaults",
            "-S",
            str(dbsock),
            "-u",
            "root",
            "-e",
            "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    dbd_port = free_port()
    dbd_conf = d / "slurmdbd.conf"
    dbd_conf.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={munge_sock}
DbdAddr=127.0.0.1
DbdHost={socket.gethostname().split(".")[0]}
DbdPort={dbd_port}
SlurmUser=root
LogFile={d / "slurmdbd.log"}
PidFile={d / "slurmdbd.pid"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
""")
    dbd_conf.chmod(0o600)
    procs.append(
        subprocess.Popen(
            ["slurmdbd", "-D"],
            env=dict(os.environ, SLURM_CONF=str(d / "slurm.conf"), SLURMDBD_CONF=str(dbd_conf)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", dbd_port)) == 0

    wait_for("slurmdbd listening", listening, 30)
    return dbd_port


@contextmanager
def start_slurm_cluster(
    d: Path,
    *,
    node1_extra: str = "",
    main_extra: str = "",
    extra_conf: str = "",
    accounting: bool = False,
    gres_conf: str = "",
    cluster_name: str = "greencpntest",
) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd with all state under ``d``; stopped (by PID) on exit.

    With ``accounting``, a MariaDB server (``mariadb-install-db`` + ``mariadbd`` on a free
    127.0.0.1 port, data in ``d``) and slurmdbd are started first, so ``sacct`` works.
    ``gres_conf``: the lines of a ``gres.conf`` beside ``slurm.conf`` (e.g. GPUs counted on
    node1 without devices: ``NodeName=node1 Name=gpu Count=4``, with ``GresTypes=gpu`` in
    ``extra_conf`` and ``Gres=gpu:4`` in ``node1_extra``). ``cluster_name``: Slurm's
    ``ClusterName`` (a second cluster on the same host needs its own).
    """
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    for sub in ("state", "spool", "jobs"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    procs: list[subprocess.Popen[bytes]] = []
    sock = d / "munge.sock"
    procs.append(
        subprocess.Popen(
            [
                "munged",
                "-F",
                "-f",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={d / 'munged.log'}",
                f"--pid-file={d / 'munged.pid'}",
                f"--seed-file={d / 'munged.seed'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        wait_for("munged socket", sock.exists, 10)
        record, hw_log = d / "power-calls.jsonl", d / "hw.log"
        hw = d / "hw-hook.toml"
        hw.write_text(
            'kind = "command"\n'
            f'power_on = ["sh", "-c", "echo on $1 >> {hw_log}", "sh"]\n'
            f'power_off = ["sh", "-c", "echo off $1 >> {hw_log}", "sh"]\n'
        )
        for action, name in (
            ("suspend", "suspend.sh"),
            ("resume", "resume.sh"),
            ("fail", "resume-fail.sh"),
        ):
            script = d / name
            script.write_text(
                "#!/bin/sh\n"
                f"export PYTHONPATH={REPO}\n"
                f"exec {sys.executable} -m greencpn.actuate.suspend_resume --record {record} "
                f'--hook-config {hw} --log-file {d / "suspend_resume.log"} {action} "$@"\n'
            )
            script.chmod(0o755)
        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port = free_port(), free_port()
        acct_conf = ""
        if accounting:
            dbd_port = _start_accounting(d, sock, procs)
            acct_conf = (
                "AccountingStorageType=accounting_storage/slurmdbd\n"
                f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={dbd_port}\n"
                f"AccountingStoragePass={sock}\n"  # munge socket for slurmdbd connections
            )
        if gres_conf:
            (d / "gres.conf").write_text(gres_conf + "\n")
        conf = d / "slurm.conf"
        conf.write_text(f"""\
ClusterName={cluster_name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "slurmctld.pid"}
SlurmdPidFile={d / "slurmd.pid"}
SlurmctldLogFile={d / "slurmctld.log"}
SlurmdLogFile={d / "slurmd.log"}
ReturnToService=2
PrivateData=cloud
SuspendProgram={d / "suspend.sh"}
ResumeProgram={d / "resume.sh"}
ResumeFailProgram={d / "resume-fail.sh"}
SuspendTime=3600
# a job cancelled the instant it starts can miss the SIGTERM and waits KillWait (30 s by default)
# for its SIGKILL: seen failing a 20 s wait for "job gone" under load; the test cluster waits 2 s
KillWait=2
SuspendTimeout=2
ResumeTimeout=8
{acct_conf}{extra_conf}
NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs=1 {node1_extra}
NodeName=fake[1-4] NodeAddr=127.0.0.1 CPUs=1 State=CLOUD
PartitionName=main Nodes=node1 Default=YES State=UP {main_extra}
PartitionName=cloud Nodes=fake[1-4] State=UP
""")
        env = dict(os.environ, SLURM_CONF=str(conf))
        if accounting:
            subprocess.run(
                ["sacctmgr", "-i", "add", "cluster", cluster_name],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        procs.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-i"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                ["slurmd", "-D", "-N", "node1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        cluster = SlurmCluster(d, env, record, hw_log)

        def node1_idle() -> bool:
            r = subprocess.run(
                ["sinfo", "-h", "-N", "-n", "node1", "-o", "%T"],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            )
            states = set(r.stdout.split())  # one line per partition node1 is in
            return r.returncode == 0 and states == {"idle"}

        wait_for("slurmctld up and node1 registered", node1_idle, 30)
        yield cluster
    finally:
        for p in reversed(procs):
            _stop(p)
