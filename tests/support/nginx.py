"""A real nginx (Debian's package) running the shipped deploy/nginx-cluster.conf, with its own
listen port, upstream ports and log paths, in a temporary prefix; stopped by its own PID."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from gateway.brokers import free_port
from tests.support.mosquitto import wait_for_port

CLUSTER_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx-cluster.conf"
_UPSTREAM = re.compile(r"(\n\s*server )127\.0\.0\.1:808[12]( max_fails=0;)")


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def render(conf: str, listen: int, upstreams: list[int], access_log: Path) -> str:
    """The shipped config with this test's ports and log path; fails if its shape changed (the
    test must run the file operators get, not a copy)."""
    servers = iter(upstreams)
    rendered, n = _UPSTREAM.subn(lambda m: f"{m[1]}127.0.0.1:{next(servers)}{m[2]}", conf)
    if n != len(upstreams):
        raise AssertionError(f"expected {len(upstreams)} upstream servers in the config, found {n}")
    rendered, n = re.subn(r"\n    listen 8080;", f"\n    listen 127.0.0.1:{listen};", rendered)
    assert n == 1, "no `listen 8080;` in the server block"
    rendered, n = re.subn(r"access_log \S+ ", f"access_log {access_log} ", rendered)
    assert n == 1, "no access_log line"
    return rendered


class Nginx:
    """One nginx master process in front of `upstreams` (loopback ports)."""

    def __init__(self, upstreams: list[int]) -> None:
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx not found: run scripts/test, which installs it")
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="iotgw-nginx-"))
        self.upstreams = upstreams
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _write_config(self) -> Path:
        root = self.root
        (root / "iotgw.conf").write_text(
            render(CLUSTER_CONF.read_text(), self.port, self.upstreams, root / "access.log")
        )
        temp = "\n".join(
            f"    {kind}_temp_path {root / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root (CI), the workers stay root: the prefix is a private temp dir.
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = root / "nginx.conf"
        main.write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\n"
            f"error_log {root / 'error.log'} info;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n{temp}\n    include {root / 'iotgw.conf'};\n}}\n"
        )
        return main

    def start(self) -> Nginx:
        main = self._write_config()
        check = subprocess.run(
            [self.binary, "-t", "-p", str(self.root), "-c", str(main), "-e", str(self.root / "e")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the config: {check.stderr}")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.root), "-c", str(main), "-e", str(self.root / "e")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def access_log(self) -> str:
        try:
            return (self.root / "access.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown of the master and workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
