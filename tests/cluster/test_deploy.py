"""The cluster's deployment files agree with each other: docker-compose's cluster profile runs the
nginx config tests/cluster tests, unchanged, in front of instances on the ports it names (Docker
is not available where the tests run, so this is what can be checked of the compose file)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_cluster_profile_runs_the_tested_nginx_config_in_front_of_its_instances():
    """The cluster profile mounts deploy/nginx-cluster.conf as nginx's config, and its two
    instances listen on the ports that config's upstreams name (sharing nginx's network), with
    cluster mode on, PostgreSQL history and an instance id each."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert {"postgres", "nginx", "gw-a", "gw-b"} <= cluster
    assert (
        "./deploy/nginx-cluster.conf:/etc/nginx/conf.d/default.conf:ro"
        in (services["nginx"]["volumes"])
    )
    conf = (ROOT / "deploy" / "nginx-cluster.conf").read_text()
    upstreams = re.findall(r"\n\s*server 127\.0\.0\.1:(\d+) ", conf)
    ports, ids = [], []
    for name in ("gw-a", "gw-b"):
        service = services[name]
        env = service["environment"]
        assert service["network_mode"] == "service:nginx"
        assert env["IOTGW_HTTP__HOST"] == "127.0.0.1"
        assert env["IOTGW_CLUSTER__ENABLED"] == "true"
        assert env["IOTGW_HISTORY__BACKEND"] == "postgres"
        assert env["IOTGW_HTTP__PORT"] in service["healthcheck"]["test"][-1]
        ports.append(env["IOTGW_HTTP__PORT"])
        ids.append(env["IOTGW_CLUSTER__INSTANCE_ID"])
    assert sorted(ports) == sorted(upstreams)
    assert len(set(ids)) == 2
