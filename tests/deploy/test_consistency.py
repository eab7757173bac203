"""docker-compose.yml, Dockerfile, deploy/kubernetes and deploy/orthanc agree with the code.

Every `cmb` command and flag they use exists in the CLI's parsers, every CMB_*
variable is a field of service.settings.Settings and validates, ports and AE
titles match on both sides of each association, and compose parses with the
Docker client when one is installed (no engine is needed for `config`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from cmb.cli import build_parser
from model.dicom_out.common import MANUFACTURER
from service.settings import Destination, Settings, load_settings
from tests.service.conftest import Proc, wait_for

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ORTHANC = json.loads((REPO / "deploy" / "orthanc" / "orthanc.json").read_text())
LUA = (REPO / "deploy" / "orthanc" / "autoroute.lua").read_text()
K8S = REPO / "deploy" / "kubernetes"
DEFAULTS = Settings.model_fields
COMPOSE_ENV = {"POSTGRES_PASSWORD": "secret", "CMB_API_KEYS": "ris:0123456789abcdef0123"}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against ``env``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if name in env and env[name] != "":
            return env[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), COMPOSE_ENV)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def check_cmb_args(args: list[str]) -> None:
    """``args`` after the `cmb` entry point parse with the real CLI parser."""
    commands = subparsers()
    assert args[0] in commands, f"`cmb {args[0]}` is not a command"
    known = commands[args[0]]._option_string_actions
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in known, f"`cmb {args[0]}` has no flag {arg}"
    build_parser().parse_args([str(a) for a in args])


def check_env(env: dict[str, Any]) -> None:
    for key in env:
        if key.startswith("CMB_"):
            assert key[4:].lower() in DEFAULTS, f"{key} is not a setting of service.settings"


def validated(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings the service would build from this environment (and fail on)."""
    for key in list(os.environ):
        if key.startswith("CMB_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("CMB_"):
            monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("CMB_DATA_DIR", str(tmp_path))
    return load_settings()


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run `cmb` (image targets cpu and gpu)."""
    return {
        n: s
        for n, s in compose["services"].items()
        if s.get("build", {}).get("target") in ("cpu", "gpu")
    }


def test_compose_services_run_real_commands_with_real_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ours = our_services(compose)
    assert {"scp", "api", "worker-gpu0", "worker-cpu"} <= set(ours)
    for name, service in ours.items():
        check_cmb_args(service["command"])
        check_env(service["environment"])
        st = validated(service["environment"], monkeypatch, tmp_path)
        assert st.broker_url == "redis://redis:6379/0", name
        assert st.db_url.startswith("postgresql+psycopg://cmb:secret@postgres:5432/cmb"), name
        assert service["volumes"] == ["cmb-data:/data"], name
        assert service["build"]["target"] in ("cpu", "gpu"), name
    assert ours["scp"]["command"] == ["serve", "--role", "scp"]
    scp = validated(ours["scp"]["environment"], monkeypatch, tmp_path)
    assert scp.metrics_port and scp.metrics_host == "0.0.0.0"  # its counters can be scraped
    assert ours["api"]["command"] == ["serve", "--role", "api"]
    assert all(s["command"][0] == "worker" for n, s in ours.items() if n not in ("scp", "api"))


def serve_role(command: list[str], env: dict[str, Any]) -> str:
    """The role a `cmb serve` command line runs with (flag, else CMB_ROLE, else all)."""
    args = build_parser().parse_args([str(a) for a in command])
    return str(args.role or env.get("CMB_ROLE") or DEFAULTS["role"].default)


def test_exactly_one_process_runs_the_monitor_and_outbox(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two processes with role scp/all on one database would both send every result."""
    roles = {}
    for name, service in our_services(compose).items():
        if service["command"][0] == "serve":
            roles[name] = serve_role(service["command"], service["environment"])
            st = validated(
                {**service["environment"], "CMB_ROLE": roles[name]}, monkeypatch, tmp_path
            )
            assert st.role == roles[name]
            assert "replicas" not in service.get("deploy", {}) or roles[name] == "api", name
    assert roles == {"scp": "scp", "api": "api"}
    # The API gets no destinations (it sends nothing); the SCP has them.
    assert "CMB_DESTINATIONS" not in our_services(compose)["api"]["environment"]
    assert compose["services"]["api"]["depends_on"]["scp"]["condition"] == "service_healthy"


def test_gpu_workers_reserve_one_gpu_each(compose: dict[str, Any]) -> None:
    gpus = {n: s for n, s in our_services(compose).items() if n.startswith("worker-gpu")}
    assert len(gpus) >= 2
    ids = []
    for service in gpus.values():
        assert service["build"]["target"] == "gpu"
        assert "--device" in service["command"]
        assert service["command"][service["command"].index("--device") + 1] == "cuda"
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        ids += device["device_ids"]
    assert len(ids) == len(set(ids)), "two workers pinned to the same GPU"


def test_ports_and_ae_titles_match_across_the_associations(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scp = compose["services"]["scp"]
    st = validated(scp["environment"], monkeypatch, tmp_path)
    assert [p.rsplit(":", 1)[-1] for p in scp["ports"]] == [str(st.dicom_port)]
    api = compose["services"]["api"]
    api_st = validated(api["environment"], monkeypatch, tmp_path)
    assert [p.rsplit(":", 1)[-1] for p in api["ports"]] == [str(api_st.api_port)]
    assert api_st.api_host == "0.0.0.0"  # reachable from outside the container

    # Orthanc -> us: its modality "cmb" is our service name, port and AE title.
    modality = ORTHANC["DicomModalities"][ORTHANC["CmbRouting"]["Modality"]]
    assert (modality["Host"], modality["Port"], modality["AET"]) == (
        "scp",
        st.dicom_port,
        st.ae_title,
    )
    assert ORTHANC["CmbRouting"]["AeTitle"] == st.ae_title
    assert ORTHANC["CmbRouting"]["Manufacturer"] == MANUFACTURER
    # Us -> Orthanc: our destination is Orthanc's AE title and DICOM port, and we accept it.
    [dest] = [Destination.parse(d) for d in st.destinations]
    assert (dest.ae_title, dest.host, dest.port) == (
        ORTHANC["DicomAet"],
        "orthanc",
        ORTHANC["DicomPort"],
    )
    assert ORTHANC["DicomAet"] in st.allow_ae
    orthanc = compose["services"]["orthanc"]
    assert any(p.endswith(f":{ORTHANC['DicomPort']}") for p in orthanc["ports"])
    assert any(p.endswith(f":{ORTHANC['HttpPort']}") for p in orthanc["ports"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in orthanc["volumes"]}
    assert mounts["/etc/orthanc/autoroute.lua"] == "./deploy/orthanc/autoroute.lua"
    assert ORTHANC["LuaScripts"] == ["/etc/orthanc/autoroute.lua"]
    for key in ("Modality", "AeTitle", "Manufacturer", "MinEchoTimeMs", "Enabled"):
        assert f"c['{key}']" in LUA, f"autoroute.lua does not read CmbRouting.{key}"
    # The viewer's nginx reaches Orthanc's DICOMweb where app-config.js looks for it.
    conf = (REPO / "deploy" / "nginx" / "viewer.conf").read_text()
    assert f"proxy_pass http://orthanc:{ORTHANC['HttpPort']}/dicom-web/;" in conf
    assert ORTHANC["DicomWeb"]["Root"] == "/dicom-web/"
    app_config = (REPO / "deploy" / "ohif" / "app-config.js").read_text()
    assert "qidoRoot: '/dicom-web'" in app_config and "wadoRoot: '/dicom-web'" in app_config
    ohif = compose["services"]["ohif"]
    assert ohif["build"]["target"] == "ohif"
    assert [p.rsplit(":", 1)[-1] for p in ohif["ports"]] == [re.findall(r"listen (\d+);", conf)[0]]


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
            stages[current] = []
        elif current and line and not line.startswith("#"):
            stages[current].append(line)
    return stages


def test_dockerfile_matches_the_code() -> None:
    stages = dockerfile_stages()
    assert {"cpu", "gpu"} <= set(stages)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not any("torch" in d for d in extras["cpu"] + extras["gpu"])
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    for venv in ("venv-cpu", "venv-gpu"):
        body = "\n".join(stages[venv])
        assert "sys.exit(u.find_spec('torch') is not None)" in body, f"{venv}: no torch check"
        assert "default_model_path" in body, f"{venv}: no check of the shipped weights"
    for name, lines in stages.items():
        for line in lines:
            m = re.match(r"COPY\s+(?!--from)(.+)\s+(\S+)$", line)
            if m:
                for src in m.group(1).split():
                    assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
                    top = src.split("/")[0]
                    assert top not in dockerignore or f"!{src}" in dockerignore, src
            for extra in re.findall(r"\[(cpu|gpu|training|test)\]", line):
                assert extra in ("cpu", "gpu"), f"{name} installs the {extra} extra"
    from tests.deploy.viewer import OHIF_VERSION

    assert f"ARG OHIF_VERSION={OHIF_VERSION}" in DOCKERFILE.read_text()
    ohif = "\n".join(stages["ohif"])
    assert "COPY deploy/ohif/app-config.js /usr/share/nginx/html/app-config.js" in ohif
    assert "COPY deploy/nginx/viewer.conf /etc/nginx/conf.d/default.conf" in ohif
    assert "nginx-unprivileged" in DOCKERFILE.read_text()
    for target in ("cpu", "gpu"):
        body = "\n".join(stages[target])
        assert 'ENTRYPOINT ["cmb"]' in body
        [cmd] = re.findall(r"^CMD (\[.*\])$", body, re.M)
        check_cmb_args(json.loads(cmd))
        assert re.search(r"^USER cmb$", body, re.M), f"{target} must not run as root"
        assert "HEALTHCHECK" in body and "/opt/cmb/healthcheck.py" in body
        env = dict(re.findall(r"(CMB_\w+)=(\S+)", body))
        check_env(env)
        assert env["CMB_DICOM_PORT"] == str(DEFAULTS["dicom_port"].default)
        assert env["CMB_API_HOST"] == "0.0.0.0"
        [expose] = re.findall(r"^EXPOSE (.+)$", body, re.M)
        assert set(expose.split()) == {env["CMB_DICOM_PORT"], env["CMB_API_PORT"]}


def test_kubernetes_manifests_match_the_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    kustomize = next(d for d in docs if d["kind"] == "Kustomization")
    assert sorted(kustomize["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    settings_env = {**by_kind["ConfigMap"][0]["data"], **by_kind["Secret"][0]["stringData"]}
    check_env(settings_env)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    for name in ("cmb-scp", "cmb-api", "cmb-worker-gpu"):
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        check_cmb_args(container["args"])
        env = {**settings_env, **{e["name"]: e["value"] for e in container.get("env", [])}}
        check_env(env)
        env["CMB_DATABASE_URL"] = "postgresql+psycopg://cmb:x@db:5432/cmb"
        validated(env, monkeypatch, tmp_path)
        assert deployments[name]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    # One SCP (monitor and outbox are singletons), replaced not rolled; APIs scale.
    scp, api = deployments["cmb-scp"], deployments["cmb-api"]
    assert scp["spec"]["replicas"] == 1 and scp["spec"]["strategy"]["type"] == "Recreate"
    serving = [
        d
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["args"][0] == "serve" and serve_role(c["args"], settings_env) in ("scp", "all")
    ]
    assert serving == [scp]
    [container] = scp["spec"]["template"]["spec"]["containers"]
    assert serve_role(container["args"], settings_env) == "scp"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ports == {"dicom": int(env["CMB_DICOM_PORT"]), "metrics": int(env["CMB_METRICS_PORT"])}
    assert env["CMB_METRICS_HOST"] == "0.0.0.0"  # reachable by a scraper in the cluster
    [container] = api["spec"]["template"]["spec"]["containers"]
    assert serve_role(container["args"], settings_env) == "api"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ports == {"http": int(env["CMB_API_PORT"])}
    services = {d["metadata"]["name"]: d for d in by_kind["Service"]}
    assert services["cmb-dicom"]["spec"]["selector"] == {"app": "cmb-scp"}
    assert services["cmb-api"]["spec"]["selector"] == {"app": "cmb-api"}
    [worker] = deployments["cmb-worker-gpu"]["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    keda = by_kind["ScaledObject"][0]["spec"]
    assert keda["triggers"][0]["metadata"]["listName"] == DEFAULTS["queue"].default


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.skipif(compose_client() is None, reason="neither `docker compose` nor docker-compose")
def test_docker_compose_config_accepts_the_file() -> None:
    client = compose_client()
    assert client is not None
    env = {**os.environ, **COMPOSE_ENV}
    for profiles in ([], ["--profile", "cpu", "--profile", "multi-gpu"]):
        done = subprocess.run(
            [*client, "-f", str(COMPOSE), *profiles, "config", "--services"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        services = set(done.stdout.split())
        assert {"redis", "postgres", "scp", "api", "worker-gpu0", "orthanc", "ohif"} <= services
    assert {"worker-cpu", "worker-gpu1"} <= services
    missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    done = subprocess.run(
        [*client, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=missing,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_reads_the_serve_flags_and_probes_healthz() -> None:
    hc = load_healthcheck()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert hc.check_serve(["cmb", "serve", "--api-port", str(port)]) is None
        # API off: the DICOM port is probed instead (here the HTTP server's port is open).
        api_off = ["cmb", "serve", "--api-port", "0", "--dicom-port", str(port)]
        assert hc.check_serve(api_off) is None
        # Role scp serves no HTTP: the DICOM port is probed whatever the API port says.
        assert hc.check_serve(["cmb", "serve", "--role", "scp", "--dicom-port", str(port)]) is None
    finally:
        server.shutdown()
    assert "unreachable" in hc.check_serve(["cmb", "serve", f"--api-port={port}"])
    assert "refuses" in hc.check_serve(["cmb", "serve", "--api-port=0", f"--dicom-port={port}"])
    assert "refuses" in hc.check_serve(["cmb", "serve", "--role=scp", f"--dicom-port={port}"])


@pytest.mark.network
@pytest.mark.slow
def test_healthcheck_pings_exactly_this_containers_worker(
    procs: Callable[..., Proc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cmb worker` names itself cmb-<pid>@<host>; the health check's ping must reach it."""
    import redis

    broker = os.environ.get("CMB_TEST_REDIS", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(broker, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis at {broker} unavailable: {type(e).__name__}")
    queue = f"cmb-hc-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env.update(
        CMB_BROKER_URL=broker,
        CMB_QUEUE=queue,
        CMB_DATA_DIR=str(tmp_path / "data"),
        CMB_LOG_FORMAT="text",
    )
    worker = procs(
        [sys.executable, "-m", "cmb.cli", "worker", "--concurrency", "1"],
        tmp_path / "worker.log",
        env,
    )
    wait_for(lambda: "ready" in worker.output() or worker.p.poll() is not None, 60, "worker ready")
    assert worker.p.poll() is None, worker.output()[-3000:]
    monkeypatch.setenv("CMB_BROKER_URL", broker)
    monkeypatch.setenv("CMB_DATA_DIR", str(tmp_path / "data"))
    hc = load_healthcheck()
    try:
        assert hc.check_worker(worker.p.pid) is None
        assert "did not answer" in hc.check_worker(worker.p.pid + 100000)
    finally:
        worker.stop()
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()
