"""A real Ray cluster of several nodes on loopback, for the tests and the benchmark: started
with ``ray start`` as a user starts one, its raylets killable, stopped with everything in it.

Each node is a ``ray start --block`` process (its raylet and the rest are its children), so
one node can be lost on purpose (``kill_raylet``) and the whole cluster ended by process
group. The cluster asks for a token (``RAY_AUTH_MODE=token``: without it a second node on the
same host was refused), generated here and handed to every process through ``env``.

Ray replaces 127.0.0.1 with the machine's own address (the one its route to the internet
would use) wherever it is given one, so a "loopback" cluster would listen and talk on the
network interface. ``keep_on_loopback`` makes that lookup answer 127.0.0.1; every process of
the cluster runs it at start-up (``loopback/sitecustomize.py`` on its path), and a test that
drives the cluster from its own process calls it before joining.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = Path(__file__).with_name("loopback")  # holds the sitecustomize that runs this


def keep_on_loopback() -> None:
    """Ray's address of this machine is 127.0.0.1 in this process (see the module's doc)."""
    from ray._private import services

    services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"


# How often the head asks each node whether it is alive, and how many missed answers make it
# dead: a node lost (a killed raylet refuses at once) is known in about 3 s instead of Ray's
# 15 (3 s x 5), while a node that is only slow, each question waiting Ray's 10 s for its answer,
# would need half a minute without one.
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def cluster_env(token: str, tmp: Path) -> dict[str, str]:
    """What every process of a test cluster, drivers included, runs with."""
    path = os.pathsep.join(p for p in (str(LOOPBACK), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0",
            "LLAVAGUARD_RAY_LOOPBACK": "1", "PYTHONPATH": path, **HEALTH_CHECKS}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    """Nodes ``ray start``-ed on 127.0.0.1; ``env`` is what a driver needs to join."""

    address: str
    env: dict[str, str]
    tmp: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def raylet(self, node: int) -> int:
        """The pid of a node's raylet (a child of its ``ray start``)."""
        import psutil

        for child in psutil.Process(self.nodes[node].pid).children(recursive=True):
            if child.name() == "raylet":
                return child.pid
        raise RuntimeError(f"node {node} has no raylet")

    def kill_raylet(self, node: int) -> None:
        """Lose a node as a crash would: SIGKILL to its raylet, its workers orphaned."""
        os.kill(self.raylet(node), signal.SIGKILL)

    def add_node(self, cpus: int, timeout: float = 120) -> None:
        """One more node (``ray start --address``), once the cluster lists it alive."""
        head = not self.nodes
        seen = set() if head else _alive(self)
        port = self.address.rsplit(":", 1)[1]
        where = ["--head", "--port", port, "--include-dashboard", "false"] if head else [
            "--address", self.address]  # fmt: skip
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray, "start", *where, "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
               "--block", "--disable-usage-stats"]  # fmt: skip
        log = open(self.tmp / f"node-{len(self.nodes)}.log", "w")  # noqa: SIM115 (the node's)
        self.nodes.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log,
                                           start_new_session=True))  # fmt: skip
        _wait_new_node(self, seen, timeout)

    def join(self) -> None:
        """Make this process a driver of the cluster (``ray.init``), on loopback. Ray reads
        the token when it is imported: this process must have had the cluster's since."""
        import ray

        if os.environ.get("RAY_AUTH_TOKEN") != self.env["RAY_AUTH_TOKEN"]:
            raise RuntimeError("this process has not the cluster's RAY_AUTH_TOKEN")
        keep_on_loopback()
        ray.init(address=self.address, log_to_driver=False, configure_logging=False)

    def stop(self) -> None:
        """Kill this cluster's processes and remove its folder. Not ``ray stop``: that kills
        every Ray process on the machine, a user's own clusters too. The processes are the
        nodes' descendants (raylets, GCS, workers) and any that name the cluster's folder."""
        import psutil

        for proc in _processes(self):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for proc in self.nodes:
            proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _processes(cluster: RayCluster) -> list:
    """Every live process of the cluster, found before any is killed (a worker orphaned by
    its raylet's death is no longer its descendant)."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for node in cluster.nodes:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(node.pid)
            found.update({p.pid: p for p in [root, *root.children(recursive=True)]})
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(cluster.tmp) in arg for arg in proc.info["cmdline"] or ()):
            found[proc.pid] = proc
    return list(found.values())


def start_cluster(
    nodes: int = 2, cpus: int = 2, timeout: float = 120, token: str | None = None
) -> RayCluster:
    """A head and ``nodes - 1`` workers on loopback, each offering ``cpus`` CPUs; returns once
    every node is up. ``token``: the cluster's (default: a new one); a process that drives
    it itself must have it in its environment before Ray is imported (``join``)."""
    tmp = Path(tempfile.mkdtemp(prefix="lgray-", dir="/tmp"))  # short: Unix socket paths
    env = cluster_env(token or secrets.token_hex(16), tmp)
    cluster = RayCluster(f"127.0.0.1:{free_port()}", env, tmp)
    try:
        for _ in range(nodes):
            cluster.add_node(cpus, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _alive(cluster: RayCluster) -> set[str]:
    """The ids of the nodes the cluster lists alive (asked in a subprocess: this process stays
    out of the cluster); none while it does not answer."""
    probe = (f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False, "
             "configure_logging=False); "
             "print(*[x['NodeID'] for x in ray.nodes() if x['Alive']])")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", probe], env=cluster.env, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    lines = res.stdout.strip().splitlines()
    return set(lines[-1].split()) if res.returncode == 0 and lines else set()


def _wait_new_node(cluster: RayCluster, seen: set[str], timeout: float) -> None:
    """Until the cluster lists a live node that is not in ``seen``; the new node's process
    exiting meanwhile is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.nodes[-1].poll() is not None:
            raise RuntimeError(f"a Ray node exited; see {cluster.tmp}/node-*.log")
        if _alive(cluster) - seen:
            return
        time.sleep(1)
    raise RuntimeError(f"the new Ray node did not join in {timeout:.0f} s")
