"""A throwaway single-node Ceph on loopback for the tests: one monitor, one in-memory OSD (memstore)
and radosgw, in a temporary folder, with one S3 user. Debian's ceph-mon, ceph-osd, radosgw and
ceph-common are the only requirement (`make tools` installs them); nothing is left behind.

    python tests/radosgw.py      starts one, prints its endpoint and keys, and waits for Ctrl-C
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool")
START_TIMEOUT = 120.0


class CephStartError(RuntimeError):
    """radosgw did not come up; the message carries the reason and the tail of the daemon logs."""


@dataclass(frozen=True)
class Radosgw:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path


def _die_with_parent() -> None:
    """A daemon gets SIGTERM when the process that started it dies, however it dies (Linux's PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(root: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    """One monitor and one memstore OSD that hold every pool alone; radosgw's beast frontend on loopback."""
    return f"""[global]
fsid = {fsid}
mon host = [v1:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {root}/keyring
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
log to stderr = false
err to stderr = false
mon data = {root}/mon/$id
osd data = {root}/osd/$id
[osd]
keyring = {root}/osd/$id/keyring
[global]
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# a throwaway cluster on a busy disk: never refuse to start for the host's free space
mon data avail crit = 0
mon data avail warn = 0
mon max pg per osd = 1000
osd max object name len = 460
osd max object namespace len = 64

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw dns name = 127.0.0.1
rgw thread pool size = 64
"""


class _Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "ceph.conf"
        self.processes: list[subprocess.Popen] = []

    def run(self, *command: str, timeout: float = 60.0) -> str:
        args = [command[0], "-c", str(self.conf), *command[1:]]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise CephStartError(f"{' '.join(command)} exited with {result.returncode}: "
                                 f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result.stdout

    def spawn(self, *command: str) -> None:
        """A daemon in the foreground (-f), so that it is this process's child and dies with the fixture."""
        log = open(self.root / "log" / f"{Path(command[0]).name}.out", "wb")
        self.processes.append(subprocess.Popen([command[0], "-f", "-c", str(self.conf), *command[1:]],
                                               stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))
        log.close()

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise CephStartError(f"{process.args[0]} exited with {process.returncode}")

    def stop(self) -> None:
        """SIGKILL: the OSD keeps everything in memory and all of it is thrown away (SIGTERM takes ~5 s)."""
        for process in self.processes:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 15) -> str:
        tails = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            if text:
                tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)


def _start(cluster: _Cluster) -> Radosgw:
    root = cluster.root
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        raise CephStartError(f"not installed: {', '.join(missing)} (make tools installs Debian's ceph-mon, "
                             f"ceph-osd, radosgw and ceph-common)")
    for folder in ("run", "log", "mon/a", "osd/0"):
        (root / folder).mkdir(parents=True)
    fsid, mon_port, rgw_port = str(uuid.uuid4()), _free_port(), _free_port()
    cluster.conf.write_text(_config(root, fsid, mon_port, rgw_port))
    keyring = str(root / "keyring")
    cluster.run("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
    cluster.run("ceph-authtool", keyring, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *",
                "--cap", "osd", "allow *", "--cap", "mgr", "allow *")
    cluster.run("ceph-authtool", keyring, "--gen-key", "-n", "client.rgw", "--cap", "mon", "allow rw",
                "--cap", "osd", "allow rwx")
    cluster.run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v1:127.0.0.1:{mon_port}]",
                str(root / "monmap"))
    # the monitor's first auth database is this keyring: client.admin and client.rgw exist from the start
    cluster.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(root / "monmap"), "--keyring", keyring)
    cluster.spawn("ceph-mon", "-i", "a")
    _wait_for_monitor(cluster)
    osd_uuid, osd_key = str(uuid.uuid4()), cluster.run("ceph-authtool", "--gen-print-key").strip()
    (root / "osd" / "0" / "keyring").write_text(f"[osd.0]\n\tkey = {osd_key}\n")
    (root / "osd-secret.json").write_text(json.dumps({"cephx_secret": osd_key}))
    cluster.run("ceph", "osd", "new", osd_uuid, "0", "-i", str(root / "osd-secret.json"), "--connect-timeout", "60",
                timeout=70)
    cluster.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
    cluster.spawn("ceph-osd", "-i", "0")
    cluster.spawn("radosgw", "-n", "client.rgw")
    endpoint = f"http://127.0.0.1:{rgw_port}"
    _wait_for_http(endpoint, cluster)
    user = json.loads(cluster.run("radosgw-admin", "user", "create", "--uid", "pogona", "--display-name", "pogona",
                                  timeout=START_TIMEOUT))
    keys = user["keys"][0]
    return Radosgw(endpoint, keys["access_key"], keys["secret_key"], root)


def _wait_for_monitor(cluster: _Cluster) -> None:
    """Until the monitor answers: a loaded machine can take longer than a client's connect timeout to bring it
    up, and a monitor that died is named as such instead of as a client's time-out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        cluster.check_alive()
        try:
            cluster.run("ceph", "mon", "stat", "--connect-timeout", "5", timeout=15)
            return
        except (CephStartError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise CephStartError(f"the monitor did not answer within {START_TIMEOUT:.0f}s") from None


def _wait_for_http(endpoint: str, cluster: _Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any S3 answer (an anonymous listing is refused) means it serves
        except OSError:
            time.sleep(0.2)
    raise CephStartError(f"radosgw did not answer on {endpoint} within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def radosgw() -> Iterator[Radosgw]:
    """Start the cluster, yield its S3 endpoint and keys, then stop every daemon and remove the folder.
    A failed start raises CephStartError with the daemons' log tails."""
    root = Path(tempfile.mkdtemp(prefix="pogona-ceph-"))
    cluster = _Cluster(root)
    try:
        try:
            gateway = _start(cluster)
        except (CephStartError, OSError, subprocess.TimeoutExpired) as exc:
            raise CephStartError(f"radosgw did not start: {exc}\n{cluster.log_tail()}") from exc
        yield gateway
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    with radosgw() as gateway:
        print(f"radosgw up in {time.monotonic() - started:.1f}s at {gateway.endpoint}\n"
              f"AWS_ENDPOINT_URL_S3={gateway.endpoint} AWS_ACCESS_KEY_ID={gateway.access_key} "
              f"AWS_SECRET_ACCESS_KEY={gateway.secret_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
