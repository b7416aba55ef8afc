"""A multi-node Ray cluster on one machine (``ray start``), for dry runs at size and tests.

A local ``ray.init`` is one node; a real cluster is a head and worker nodes, each its own
raylet with its own resources, joined over the GCS. :class:`LocalCluster` starts exactly that
on this machine (``ray start --head`` and ``ray start --address`` per worker node) so that a
build runs against the same ``ray.address`` path a deployment uses, with work spread over
nodes. It stops only the processes of its own cluster (found by its GCS port): ``ray stop``
would also stop every other Ray of the user, a test session's included.
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_command() -> str:
    """The ``ray`` executable next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


@dataclass
class LocalCluster:
    """A Ray head plus ``workers`` worker nodes on this machine, each with ``cpus`` CPUs.

    Every node also declares a custom resource ``node<k>: 1`` (the head is ``node0``), so a
    caller can check or pin placement. Use as a context manager; ``address`` is what
    ``ray.address`` (or ``ray.init(address=...)``) takes.
    """

    workers: int = 2
    cpus: int = 1
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)

    @property
    def address(self) -> str:
        """The GCS address of the head."""
        return f"127.0.0.1:{self.port}"

    @property
    def nodes(self) -> int:
        """Head plus worker nodes."""
        return 1 + self.workers

    def _start(self, *args: str, node: int) -> None:
        resources = json.dumps({f"node{node}": 1})
        environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.env}
        done = subprocess.run(
            [_ray_command(), "start", *args, f"--num-cpus={self.cpus}", "--num-gpus=0",
             f"--resources={resources}", "--disable-usage-stats"],
            env=environment, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed: {done.stderr[-2000:]}")

    def start(self) -> LocalCluster:
        """Start the head, then the worker nodes; wait until every node is alive."""
        self._start("--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", node=0)
        for node in range(1, self.nodes):
            self._start(f"--address={self.address}", "--node-ip-address=127.0.0.1", node=node)
        self._wait_for_nodes()
        return self

    def _wait_for_nodes(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        probe = (f"import ray, json; ray.init(address={self.address!r}, logging_level='ERROR'); "
                 "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))")
        while True:
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                  env={**os.environ, **self.env}, timeout=120)
            if done.returncode == 0 and int(done.stdout.strip().splitlines()[-1]) >= self.nodes:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local cluster at {self.address} did not bring up "
                                   f"{self.nodes} nodes: {done.stderr[-1000:]}")
            time.sleep(1.0)

    def processes(self) -> list[psutil.Process]:
        """This cluster's daemons (GCS, raylets, their helpers), found by the GCS port."""
        mine = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info.get("cmdline") or [])
            if str(self.port) in cmdline and ("ray" in cmdline or "gcs" in cmdline):
                mine.append(process)
        return mine

    def stop(self) -> None:
        """Stop every process of this cluster (workers die with their raylet) and no other."""
        found = self.processes()
        everything = {p.pid: p for p in found}
        for process in found:
            try:
                everything.update({c.pid: c for c in process.children(recursive=True)})
            except psutil.Error:
                continue
        for process in everything.values():
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(list(everything.values()), timeout=3)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                continue

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
