"""Every file under deploy/ is valid for its tool and wired the way the hub needs.

No docker engine or cluster runs here: NATS configs go through ``nats-server -t`` (and the
role tests start them for real), compose/Kubernetes/Helm files are parsed and checked for
the kinds, services and wiring that matter, systemd units by a small parser (and
``systemd-analyze verify`` where it exists), the Dockerfile by its instructions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.bus import DEFAULT_PORT, nats_server_binary
from tests.deploy.nats_layout import (
    CLUSTER_NODES,
    DEPLOY,
    NATS_DIR,
    REPO,
    USERS,
    config_test,
    helm_values,
    password_env,
    passwords,
    prepare,
    prepare_helm,
    server_name,
)

#: what `impactbus run` accepts (services.runtime.hub.SERVICES; checked below)
SERVICES = ("api", "router", "email", "slack", "webhook", "digest")
CONFS = sorted(NATS_DIR.rglob("*.conf"))
YAMLS = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def _rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def _code(text: str) -> str:
    """NATS config or unit text without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _nats_minor() -> str:
    out = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=True
    )
    match = re.search(r"v(\d+\.\d+)\.", out.stdout + out.stderr)
    assert match, out
    return match[1]


def test_deploy_knows_every_service() -> None:
    from services.runtime.hub import SERVICES as RUNNABLE  # imported here: the hub is a big import

    assert set(RUNNABLE) == set(SERVICES)


# --------------------------------------------------------------------------- NATS


def test_there_are_configs_to_check() -> None:
    names = {_rel(c) for c in CONFS}
    assert {"nats/single.conf", "nats/accounts.conf", "nats/cluster/cluster-common.conf"} <= names
    assert {f"nats/cluster/{n}.conf" for n in CLUSTER_NODES} <= names


@pytest.mark.parametrize("conf", CONFS, ids=_rel)
def test_nats_config_passes_nats_server_test(conf: Path) -> None:
    result = config_test(conf, password_env(passwords()))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stderr


def test_rewritten_copies_pass_too(tmp_path: Path) -> None:
    pw = passwords()
    single, nodes = prepare(tmp_path, pw)
    for node in (single, *nodes, prepare_helm(tmp_path, pw)):
        result = config_test(node.config, password_env(pw))
        assert result.returncode == 0, f"{node.name}: {result.stderr}"


def test_a_missing_password_keeps_the_server_from_starting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(password_env(passwords()))
    del env["NATS_PARTNER_PASSWORD"]
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(NATS_DIR / "accounts.conf")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "NATS_PARTNER_PASSWORD" in result.stderr


def test_every_user_gets_its_password_from_its_own_variable() -> None:
    code = _code((NATS_DIR / "accounts.conf").read_text())
    users = dict(re.findall(r"user:\s*([\w-]+)[\s,]+password:\s*\$(\w+)", code))
    assert users == USERS


def test_cluster_nodes_differ_only_in_their_identity() -> None:
    texts = {n: (NATS_DIR / "cluster" / f"{n}.conf").read_text() for n in CLUSTER_NODES}
    names = [server_name(NATS_DIR / "cluster" / f"{n}.conf") for n in CLUSTER_NODES]
    assert names == ["nats-1", "nats-2", "nats-3"]
    stores = [re.findall(r"store_dir:\s*(\S+)", _code(t)) for t in texts.values()]
    assert all(len(s) == 1 for s in stores)
    assert len({s[0] for s in stores}) == 3, stores

    for text in texts.values():
        code = _code(text)
        assert re.search(r"^\s*sync_interval:\s*always\s*$", code, re.M)
        assert re.search(r"^\s*name:\s*impactbus\s*$", code, re.M)
        assert set(re.findall(r"nats-route://(nats-\d):6222", code)) == set(names)
        assert "include ./cluster-common.conf" in code

    # the same file but for the node's own number: no setting drifts on one node
    def generic(i: int, text: str) -> str:
        text = re.sub(r"nats-route://\S+", "<route>", _code(text))  # routes: checked above
        return re.sub(rf"(?<![\w-])nats-{i}(?![\w-])", "<node>", text)

    generic_texts = {generic(i, t) for i, t in enumerate(texts.values(), 1)}
    assert len(generic_texts) == 1


def test_single_node_sets_and_explains_sync_interval() -> None:
    text = (NATS_DIR / "single.conf").read_text()
    assert re.search(r"^\s*sync_interval:\s*\S+\s*$", _code(text), re.M)
    comments = " ".join(line for line in text.splitlines() if line.strip().startswith("#"))
    assert "2 minutes" in comments  # why it is set: the default's window of loss


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    assert all(isinstance(d, dict) for d in docs)


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _env_example(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_runs_the_cluster_from_the_deploy_configs() -> None:
    compose = _compose()
    assert {"services", "volumes", "networks"} <= set(compose)
    services = compose["services"]
    volumes = set()
    for i, node in enumerate(CLUSTER_NODES, 1):
        svc = services[f"nats-{i}"]
        assert svc["image"].startswith(f"nats:{_nats_minor()}")
        assert svc["command"] == ["-c", f"/etc/nats/cluster/{node}.conf"]
        mounts = dict(v.split(":")[:2] for v in svc["volumes"])
        assert mounts["./nats"] == "/etc/nats"
        assert (DEPLOY / "nats" / "cluster" / f"{node}.conf").is_file()
        store = next(src for src, dst in mounts.items() if dst == "/var/lib/nats")
        volumes.add(store)
        assert set(svc["environment"]) == set(USERS.values())
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
        assert "nats" in svc["networks"]["bus"]["aliases"]
    assert len(volumes) == 3
    assert volumes <= set(compose["volumes"])


def test_compose_runs_every_service_against_the_cluster() -> None:
    services = _compose()["services"]
    by_command = {tuple(s.get("command", [])): name for name, s in services.items()}
    for service in SERVICES:
        name = by_command[("run", service)]
        svc = services[name]
        env = svc["environment"]
        assert env["IMPACTBUS_NATS_URL"] == f"nats://nats:{DEFAULT_PORT}"
        assert env["IMPACTBUS_STREAM_REPLICAS"] == "3"
        assert env["IMPACTBUS_NATS_USER"] == ("api" if service == "api" else "hub")
        user_var = USERS[env["IMPACTBUS_NATS_USER"]]
        assert env["IMPACTBUS_NATS_PASSWORD"].startswith(f"${{{user_var}:")
        assert env["IMPACTBUS_LOG_FORMAT"] == "json"
        assert "IMPACTBUS_SECRET_KEY" in env
        for i in range(1, 4):
            assert svc["depends_on"][f"nats-{i}"]["condition"] == "service_healthy"
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
    assert services["router"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["IMPACTBUS_HTTP_HOST"] == "0.0.0.0"
    assert "mailpit" in services["mailpit"]["image"]
    assert services["email"]["environment"]["IMPACTBUS_SMTP_HOST"].startswith(
        "${IMPACTBUS_SMTP_HOST:-mailpit}"
    )


def test_every_compose_variable_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    documented = _env_example(DEPLOY / ".env.example")
    assert used <= set(documented), used - set(documented)
    assert set(USERS.values()) <= set(documented)


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "impactbus.yaml").read_text()) if d]


def test_k8s_manifests_run_every_service() -> None:
    docs = _k8s_docs()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["metadata"]["name"]
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Deployment", "Service"}
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}

    for service in SERVICES:
        dep = deployments[f"impactbus-{service}"]
        spec = dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        (container,) = spec["template"]["spec"]["containers"]
        assert container["args"] == ["run", service]
        assert container["image"].split(":")[0] == "impactbus"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
        env = {e["name"]: e for e in container["env"]}
        user = env["IMPACTBUS_NATS_USER"]["value"]
        assert user == ("api" if service == "api" else "hub")
        ref = env["IMPACTBUS_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "impactbus-nats", "key": f"{user}-password"}
        assert "IMPACTBUS_SECRET_KEY" in env
    assert deployments["impactbus-router"]["spec"]["replicas"] == 2

    (shared,) = config_maps.values()
    assert shared["data"]["IMPACTBUS_STREAM_REPLICAS"] == "3"
    assert shared["data"]["IMPACTBUS_NATS_URL"] == f"nats://nats:{DEFAULT_PORT}"

    (svc,) = [d for d in docs if d["kind"] == "Service"]
    api = deployments["impactbus-api"]["spec"]["template"]
    assert svc["spec"]["selector"].items() <= api["metadata"]["labels"].items()
    port_names = {p["name"] for p in api["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names

    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file()


def test_helm_values_ask_for_three_jetstream_servers_on_files() -> None:
    values = helm_values()
    config = values["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == 3
    js = config["jetstream"]
    assert js["enabled"] is True
    assert js["fileStore"]["enabled"] is True
    assert js["fileStore"]["pvc"]["enabled"] is True
    assert js["fileStore"]["pvc"]["size"]
    assert js["merge"]["sync_interval"] == "always"
    assert values["container"]["image"]["tag"].startswith(_nats_minor())

    # every `<< $VAR >>` has an env entry from the secret the services read too
    referenced = set(re.findall(r"<<\s*\$(\w+)\s*>>", json.dumps(config["merge"])))
    env = values["container"]["env"]
    assert referenced == set(env) == set(USERS.values())
    keys = {v["valueFrom"]["secretKeyRef"]["key"] for v in env.values()}
    assert {f"{user}-password" for user in USERS} == keys
    names = {v["valueFrom"]["secretKeyRef"]["name"] for v in env.values()}
    assert names == {"impactbus-nats"}


# --------------------------------------------------------------------------- systemd


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) pairs; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def _values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


SYSTEMD = DEPLOY / "systemd"


def test_impactbus_template_unit_runs_its_instance() -> None:
    unit = _unit(SYSTEMD / "impactbus@.service")
    assert {"Unit", "Service", "Install"} <= set(unit)
    (exec_start,) = _values(unit["Service"], "ExecStart")
    assert exec_start.endswith("/impactbus run %i")
    assert "/etc/impactbus/impactbus.env" in _values(unit["Service"], "EnvironmentFile")
    assert _values(unit["Service"], "Restart")
    assert "nats-server.service" in " ".join(_values(unit["Unit"], "After"))


def test_impactbus_target_wants_every_service() -> None:
    unit = _unit(SYSTEMD / "impactbus.target")
    wanted = " ".join(_values(unit["Unit"], "Wants")).split()
    assert {f"impactbus@{s}.service" for s in SERVICES} == set(wanted)


def test_nats_server_unit_runs_a_deploy_config() -> None:
    unit = _unit(SYSTEMD / "nats-server.service")
    service = unit["Service"]
    env = dict(v.split("=", 1) for v in _values(service, "Environment"))
    assert env["NATS_CONFIG"].startswith("/etc/nats/")
    assert (NATS_DIR / env["NATS_CONFIG"].removeprefix("/etc/nats/")).is_file()
    (exec_start,) = _values(service, "ExecStart")
    assert exec_start.endswith("-c ${NATS_CONFIG}")
    assert _values(service, "KillSignal") == ["SIGUSR2"]  # lame duck
    env_example = _env_example(SYSTEMD / "nats.env.example")
    assert set(USERS.values()) <= set(env_example)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # a template is verified as one of its instances; the binaries are not installed here
    shutil.copy(SYSTEMD / "impactbus@.service", tmp_path / "impactbus@router.service")
    shutil.copy(SYSTEMD / "impactbus.target", tmp_path)
    shutil.copy(SYSTEMD / "nats-server.service", tmp_path)
    analyze = shutil.which("systemd-analyze")
    assert analyze
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.search(r"unknown (key|section)|invalid|failed to parse|bad|missing '='", line, re.I)
    ]
    assert not complaints


# --------------------------------------------------------------------------- Dockerfile


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    steps = _instructions(DEPLOY / "Dockerfile")
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert ("ENTRYPOINT", '["impactbus"]') in steps
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["impactbus"]
    assert any(op == "RUN" and "pip install ." in args for op, args in steps)

    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for op, args in steps:
        if op == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source

    user = dict(steps)["USER"].split(":")[0]
    assert user.isdigit()
    assert user != "0"
    for doc in _k8s_docs():
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]["securityContext"]
            assert pod["runAsNonRoot"] is True
            assert str(pod["runAsUser"]) == user
