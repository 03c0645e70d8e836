"""deploy/: what can be checked without a container engine: the files parse and agree with each other and the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from logd.server.app import DEFAULT_GRACE_S
from logd.server.config import effective_config

from server.helpers import batch, connect, error_of
from .helpers import commit, groups_stub, join, scrape, start_metrics_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HEALTH_CHECK_MODULE = "logd.server.health_check"


def _readme_commands() -> tuple[str, str]:
    """The README's install command and the command that starts the broker."""
    text = (ROOT / "README.md").read_text()
    line = next(line for line in text.splitlines() if "pip install" in line)
    install, run = line.split("#")[0].split("&&")
    return " ".join(install.split()), " ".join(run.split())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def _config_of(toml_text: str, tmp_path: Path):
    path = tmp_path / "logd.toml"
    path.write_text(toml_text)
    return effective_config({}, {}, path)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_dockerfile_uses_the_readme_commands_and_runs_safely(tmp_path):
    """The image installs with the README's command, runs `logd serve` as a non-root user, keeps the data dir on a volume and checks gRPC health."""
    install, run = _readme_commands()
    assert install == "python -m pip install -e '.[dev]'" and run == "logd serve"
    instructions = _dockerfile()
    keywords = [keyword for keyword, _ in instructions]
    assert dict(instructions)["FROM"].startswith("python:3.11-slim")
    assert ("RUN", install) in instructions
    cmd = _exec_form(dict(instructions)["CMD"])
    assert " ".join(cmd) == run
    user = dict(instructions)["USER"]
    assert user not in ("root", "0") and keywords.index("USER") < keywords.index("CMD")
    # The config baked into the image names the data dir that is the volume and the exposed ports.
    config_copy = next(args for keyword, args in instructions if keyword == "COPY" and "logd.toml" in args)
    source, target = config_copy.split()
    assert ("ENV", f"LOGD_CONFIG={target}") in instructions
    config = _config_of((ROOT / source).read_text(), tmp_path)
    assert str(config.data_dir) in _exec_form(dict(instructions)["VOLUME"])
    exposed = {int(port) for port in dict(instructions)["EXPOSE"].split()}
    assert exposed == {_port(config.listen), _port(config.metrics_listen)}
    healthcheck = dict(instructions)["HEALTHCHECK"]
    probe = _exec_form(healthcheck.split(" CMD ", 1)[1])
    assert probe[:3] == ["python", "-m", HEALTH_CHECK_MODULE]
    assert _port(probe[3]) == _port(config.listen)
    assert (ROOT / (HEALTH_CHECK_MODULE.replace(".", "/") + ".py")).exists()


def test_compose_runs_broker_prometheus_and_grafana():
    """Compose builds the image, publishes gRPC and metrics, gives Prometheus a target on the metrics port and Grafana its provisioning."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"logd", "prometheus", "grafana"}
    logd = services["logd"]
    assert logd["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / logd["build"]["context"] / logd["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert {"7070:7070", "9100:9100"} <= set(logd["ports"])
    volume, mount = logd["volumes"][0].split(":")
    assert mount == "/var/lib/logd" and volume in compose["volumes"]
    assert int(logd["stop_grace_period"].rstrip("s")) > DEFAULT_GRACE_S
    for service in ("prometheus", "grafana"):
        for entry in services[service]["volumes"]:
            source = entry.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), entry
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["logd:9100"]
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/logd.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    assert any(entry.endswith(":" + dashboards_path + ":ro") for entry in services["grafana"]["volumes"])


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/logd.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return expressions


def test_dashboard_shows_throughput_lag_and_disk_per_topic():
    """The dashboard has panels for throughput, lag and disk, by topic, each with a unique id."""
    dashboard = json.loads((DEPLOY / "grafana/dashboards/logd.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    expressions = _dashboard_expressions()
    assert any("logd_partition_records_in_total" in e and "by (topic)" in e for e in expressions)
    assert any("logd_group_lag_records" in e and "topic" in e for e in expressions)
    assert any("logd_partition_size_bytes" in e and "by (topic)" in e for e in expressions)


def test_dashboard_queries_only_metrics_the_broker_exports(tmp_path):
    """Every logd_* name in the dashboard is a series of a live broker's /metrics after some traffic."""
    server = start_metrics_server(tmp_path / "data")
    try:
        client = connect(server)
        client.create("t", 1)
        client.produce("t", 0, batch(b"a", b"b"))
        client.fetch("t", 0, 0)
        groups = groups_stub(client.channel)
        commit(groups, "g", "t", 0, 1)
        join(groups, "g2", ["t"])
        error_of(lambda: client.describe("missing"))  # an RPC error, for logd_rpc_errors_total
        exported = {name for name, _ in scrape(server.metrics_address)}
        client.channel.close()
    finally:
        server.stop()
    used = {name for expression in _dashboard_expressions() for name in re.findall(r"\blogd_[a-z0-9_]+", expression)}
    assert used and used <= exported, sorted(used - exported)


def _kubernetes() -> dict[str, dict]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "logd.yaml").read_text()))
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in documents}


def test_kubernetes_statefulset_volumes_probes_and_termination(tmp_path):
    """The StatefulSet mounts a per-pod PVC at the configured data dir, probes gRPC health on the gRPC port, requests resources and terminates gracefully."""
    objects = _kubernetes()
    statefulset = objects["StatefulSet/logd"]
    config = _config_of(objects["ConfigMap/logd-config"]["data"]["logd.toml"], tmp_path)
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": _port(config.listen), "metrics": _port(config.metrics_listen)}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(config.data_dir)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert Path(env["LOGD_CONFIG"]).parent.as_posix() == mounts["config"]
    assert container["command"] == ["logd", "serve"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    assert set(container["resources"]["requests"]) >= {"cpu", "memory"}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + DEFAULT_GRACE_S + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert statefulset["spec"]["serviceName"] in {key.split("/")[1] for key in objects if key.startswith("Service/")}


def test_kubernetes_services_select_the_pods():
    """Both services select the StatefulSet's pods and route to its named ports."""
    objects = _kubernetes()
    statefulset = objects["StatefulSet/logd"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container_ports = {port["name"] for port in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = [doc for key, doc in objects.items() if key.startswith("Service/")]
    assert len(services) == 2
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert objects["Service/logd-headless"]["spec"]["clusterIP"] == "None"


def test_systemd_unit(tmp_path):
    """The unit runs `logd serve` as a dedicated user with the sample config, raises the file limit and waits for a graceful stop."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (DEPLOY / "systemd" / "logd.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    service = sections["Service"]
    assert service["ExecStart"][0].endswith("/logd serve")
    assert service["User"] == ["logd"]
    assert service["KillSignal"] == ["SIGTERM"] and int(service["TimeoutStopSec"][0]) > DEFAULT_GRACE_S
    assert int(service["LimitNOFILE"][0]) >= 65536
    assert service["Restart"] == ["on-failure"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]
    config_path = dict(value.split("=", 1) for value in service["Environment"])["LOGD_CONFIG"]
    assert config_path == "/etc/logd/logd.toml"
    config = _config_of((DEPLOY / "logd.toml").read_text(), tmp_path)
    assert str(config.data_dir) == "/var/lib/" + service["StateDirectory"][0]
    assert str(config.data_dir) in service["ReadWritePaths"][0].split()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.y*ml")))
def test_every_yaml_file_parses(path):
    """Each YAML file under deploy/ parses to at least one mapping."""
    documents = [doc for doc in yaml.safe_load_all((DEPLOY / path).read_text()) if doc is not None]
    assert documents and all(isinstance(doc, dict) for doc in documents)
