"""Run the deploy/nats configs on this machine: a copy with free ports and a temp store.

The configs are written for their targets: every node listens on 4222 (clients), 6222
(routes) and 8222 (monitoring), reaches the others as ``nats-1..3`` and stores under
``/var/lib/nats/<server name>``. :func:`prepare` copies ``deploy/nats/`` (so relative
includes keep working), then rewrites exactly these lines of each node file:

- ``listen: <host>:<default client port>`` -> ``listen: 127.0.0.1:<free client port>``
- ``listen: <host>:6222`` (in ``cluster {}``) -> ``listen: 127.0.0.1:<free route port>``
- ``http: <host>:8222`` -> ``http: 127.0.0.1:<free monitoring port>``
- ``nats-route://nats-<i>:6222`` -> ``nats-route://127.0.0.1:<route port of node i>``
- ``store_dir: /var/lib/nats/<name>`` -> ``store_dir: "<tmp>/store/<name>"``

and fails if a default port or ``/var/lib`` path is left anywhere, so a config that
drifts from this shape breaks the tests instead of silently binding a fixed port (the
machine's own NATS owns 4222). Servers are started as child processes and stopped by
their PID.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.bus import DEFAULT_PORT, free_port, nats_server_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NATS_DIR = DEPLOY / "nats"
CLUSTER_NODES = ("n1", "n2", "n3")

#: user name -> the environment variable holding its password (deploy/nats/accounts.conf)
USERS = {
    "hub": "NATS_HUB_PASSWORD",
    "api": "NATS_API_PASSWORD",
    "system-somerville": "NATS_SYSTEM_SOMERVILLE_PASSWORD",
    "partner": "NATS_PARTNER_PASSWORD",
    "admin": "NATS_ADMIN_PASSWORD",
}


def passwords() -> dict[str, str]:
    """Fresh passwords for every user, made the way deploy/README.md tells operators to."""
    return {user: f"pw{secrets.token_hex(24)}" for user in USERS}


def password_env(pw: dict[str, str]) -> dict[str, str]:
    """The environment nats-server needs for ``pw``."""
    return {USERS[user]: value for user, value in pw.items()}


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        port = free_port()
        if port not in (4222, 6222, 8222):  # the defaults must not survive a rewrite
            ports.add(port)
    return sorted(ports)


@dataclass
class NatsNode:
    """One nats-server started from a rewritten deploy config."""

    name: str
    config: Path
    client_port: int
    route_port: int
    monitor_port: int
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def log(self) -> Path:
        return self.config.parent / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (returns at once; see :meth:`wait_ready`)."""
        assert not self.alive
        out = (self.config.parent / f"{self.name}.out").open("ab")
        try:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config), "-l", str(self.log)],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        finally:
            out.close()

    def monitor(self, path: str) -> dict[str, object] | None:
        """GET a monitoring endpoint; ``None`` while the server does not answer 200."""
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return dict(json.loads(resp.read()))
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll ``/healthz?js-enabled-only=true`` until it answers, with a deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            if self.monitor("/healthz?js-enabled-only=true") is not None:
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready in {timeout}s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL by PID and reap it."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(10)

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL if it lingers) and reap it."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(10)

    def tail(self, lines: int = 8) -> str:
        text = ""
        for path in (self.config.parent / f"{self.name}.out", self.log):
            if path.exists():
                text += path.read_text(errors="replace")
        return " | ".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- rewriting

_CLIENT = re.compile(rf"^(\s*listen:\s*)\S+:{DEFAULT_PORT}[ \t]*$", re.M)
_ROUTE_LISTEN = re.compile(r"^(\s*listen:\s*)\S+:6222[ \t]*$", re.M)
_HTTP = re.compile(r"^(\s*http:\s*)\S+:8222[ \t]*$", re.M)
_ROUTE_URL = re.compile(r"nats-route://(nats-\d+):6222")
_STORE = re.compile(r"^(\s*store_dir:\s*)\"?/var/lib/nats/([\w.-]+)\"?[ \t]*$", re.M)
_LEFTOVER = re.compile(r":(4222|6222|8222)\b|/var/lib/")


def _sub_once(
    pattern: re.Pattern[str],
    repl: Callable[[re.Match[str]], str],
    text: str,
    what: str,
    path: Path,
) -> str:
    out, n = pattern.subn(repl, text)
    if n != 1:
        raise AssertionError(f"{path.name}: expected one {what} line, found {n}")
    return out


def _rewrite_node(
    path: Path, node: NatsNode, routes: dict[str, int], store: Path, *, clustered: bool
) -> None:
    text = path.read_text()
    local = "127.0.0.1"
    text = _sub_once(_CLIENT, lambda m: f"{m[1]}{local}:{node.client_port}", text, "client", path)
    text = _sub_once(_HTTP, lambda m: f"{m[1]}{local}:{node.monitor_port}", text, "http", path)
    text = _sub_once(_STORE, lambda m: f'{m[1]}"{store / m[2]}"', text, "store_dir", path)
    if clustered:
        text = _sub_once(
            _ROUTE_LISTEN, lambda m: f"{m[1]}{local}:{node.route_port}", text, "route", path
        )
        found = set(_ROUTE_URL.findall(text))
        if found != set(routes):
            raise AssertionError(f"{path.name}: routes to {sorted(found)}, want {sorted(routes)}")
        text = _ROUTE_URL.sub(lambda m: f"nats-route://{local}:{routes[m[1]]}", text)
    path.write_text(text)


def server_name(config: Path) -> str:
    """The ``server_name`` a config sets."""
    match = re.search(r"^server_name:\s*\"?([\w.-]+)\"?\s*$", config.read_text(), re.M)
    if match is None:
        raise AssertionError(f"{config.name}: no server_name")
    return match[1]


def _check_no_defaults(root: Path) -> None:
    for conf in root.rglob("*.conf"):
        for lineno, line in enumerate(conf.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _LEFTOVER.search(code):
                raise AssertionError(f"{conf.name}:{lineno} not rewritten: {line.strip()}")


def prepare(tmp: Path, pw: dict[str, str]) -> tuple[NatsNode, list[NatsNode]]:
    """Copy deploy/nats/ to ``tmp`` and rewrite it; the single node and the three nodes.

    Nothing is started. Every port is a free one on 127.0.0.1; the stores live in ``tmp``.
    """
    root = tmp / "nats"
    shutil.copytree(NATS_DIR, root)
    store = tmp / "store"
    env = password_env(pw)
    ports = iter(_free_ports(2 + 3 * len(CLUSTER_NODES)))

    conf = root / "single.conf"
    single = NatsNode(server_name(conf), conf, next(ports), 0, next(ports), env)
    _rewrite_node(single.config, single, {}, store, clustered=False)

    nodes = []
    for n in CLUSTER_NODES:
        conf = root / "cluster" / f"{n}.conf"
        nodes.append(NatsNode(server_name(conf), conf, next(ports), next(ports), next(ports), env))
    routes = {node.name: node.route_port for node in nodes}
    for node in nodes:
        _rewrite_node(node.config, node, routes, store, clustered=True)
    _check_no_defaults(root)
    return single, nodes


def config_test(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nats-server -t -c <config>``: parse and validate without starting."""
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --------------------------------------------------------------------------- helm values

_HELM_VAR = re.compile(r'"<<\s*(.*?)\s*>>"')


def helm_values() -> dict[str, Any]:
    """deploy/k8s/nats-values.yaml."""
    return dict(yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text()))


def render_helm_conf(values: dict[str, Any], jetstream: dict[str, Any]) -> str:
    """The part of nats.conf the chart renders from ``config.merge`` and the JetStream merge.

    The chart writes the values as JSON (which nats-server reads) and turns the string
    ``"<< $VAR >>"`` into the bare ``$VAR``; this does the same.
    """
    config = values["config"]
    lines = [f"jetstream: {json.dumps({**jetstream, **config['jetstream'].get('merge', {})})}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in config["merge"].items()]
    return _HELM_VAR.sub(r"\1", "\n".join(lines)) + "\n"


def prepare_helm(tmp: Path, pw: dict[str, str]) -> NatsNode:
    """A single server whose accounts and JetStream settings come from the Helm values."""
    client, monitor = _free_ports(2)
    root = tmp / "helm"
    root.mkdir()
    conf = root / "nats.conf"
    conf.write_text(
        f"server_name: helm-0\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n"
        + render_helm_conf(helm_values(), {"store_dir": str(tmp / "store" / "helm-0")})
    )
    return NatsNode("helm-0", conf, client, 0, monitor, password_env(pw))
