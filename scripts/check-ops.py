#!/usr/bin/env python3
"""Checks hookstream's operations assets: the Kubernetes manifests of deploy/, the compose
stack of compose/ (docker-compose.yml, Prometheus configuration and alert rules, Grafana
provisioning and dashboards).

    scripts/check-ops.py                 # every check; exit 1 on any problem
    scripts/check-ops.py --require-tools # also fail when promtool or kubernetes-validate is missing (CI)
    scripts/check-ops.py --hookstream target/debug/hookstream
                                         # also run `hookstream check-config` on both hookstream.toml
    scripts/check-ops.py --list-metrics  # only print the hookstream metrics that dashboards and
                                         # alert rules query, one per line (for the test that
                                         # compares them with what the services export)

Checks:
* every YAML file of deploy/ and compose/ parses (all documents);
* every Kubernetes object has apiVersion, kind, metadata.name, and validates against the
  Kubernetes OpenAPI schemas of K8S_VERSION (strict) when the `kubernetes-validate` package is
  importable; structural checks either way: each container has an image, resource requests
  and limits, a restricted securityContext, and the probes its service needs (paths /healthz
  or /readyz, on a declared containerPort that matches the listen address of the ConfigMap's
  hookstream.toml); selectors, Services, Secrets, volumes and the kustomization agree;
* docker-compose.yml, prometheus.yml and the Grafana provisioning point at each other
  consistently (services, ports, mounted files);
* every dashboard is Grafana JSON with unique uid and panel ids, panels, and an `expr` in
  every target; every alert rule has alert, expr, for, labels.severity, annotations.summary;
* with promtool on PATH: `promtool check config` and `check rules`, the PromQL of every
  dashboard target (Grafana variables substituted), and `promtool test rules` of
  compose/prometheus/*_test.yml;
* with --hookstream BIN (or $HOOKSTREAM_BIN): `BIN check-config` of compose/hookstream.toml
  and of the ConfigMap's hookstream.toml, with the secrets' environment variables set from
  docker-compose.yml's defaults and from the Secret.

Needs PyYAML (`pip install pyyaml`); optionally kubernetes-validate (`pip install
kubernetes-validate==1.37.0`, its schemas are bundled: no network) and promtool (Debian/Ubuntu:
`apt-get install --no-install-recommends prometheus`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover
    try:
        import tomli as tomllib  # type: ignore
    except ImportError:
        tomllib = None

try:
    import yaml
except ImportError:  # pragma: no cover - reported below
    yaml = None

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose"
PROMETHEUS_DIR = COMPOSE / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARDS = COMPOSE / "grafana" / "dashboards"
GRAFANA_PROVISIONING = COMPOSE / "grafana" / "provisioning"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
COMPOSE_TOML = COMPOSE / "hookstream.toml"

# The Kubernetes version the manifests are validated against (kubernetes-validate bundles
# the schemas of 1.25 and later).
K8S_VERSION = "1.31.0"

METRIC = re.compile(r"\bhookstream_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROBE_PATHS = {"/healthz", "/readyz"}
SEVERITIES = {"critical", "warning", "info"}
# Grafana's built-in variables, and what stands in for them when promtool parses a target.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# What each hookstream subcommand serves, and so how its container must be probed:
# probe kind -> required path; `listen` names where the port comes from.
SERVICES = {
    "ingest": {
        "probes": {"livenessProbe": "/healthz", "readinessProbe": "/readyz"},
        # /metrics, /healthz and /readyz move to metrics_listen when it is set.
        "listen": [("ingest", "metrics_listen"), ("ingest", "listen")],
    },
    "process": {
        "probes": {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": None},
        "listen": [("processor", "listen")],
    },
    "deliver": {
        "probes": {"livenessProbe": "/healthz"},
        "listen": "--listen",
    },
    "admin": {
        "probes": {"livenessProbe": "/healthz"},
        "listen": [("admin", "listen")],
    },
}
# Where the config file is mounted in the containers.
CONFIG_PATH = "/etc/hookstream/hookstream.toml"


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notes: list[str] = []

    def problem(self, where: object, message: str) -> None:
        self.problems.append(f"{rel(where)}: {message}")

    def note(self, message: str) -> None:
        self.notes.append(message)


def rel(path: object) -> str:
    if isinstance(path, Path):
        try:
            return str(path.relative_to(ROOT))
        except ValueError:
            return str(path)
    return str(path)


def load_yaml_documents(path: Path, report: Report) -> list:
    try:
        with path.open() as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        report.problem(path, f"invalid YAML: {e}")
    except OSError as e:
        report.problem(path, f"cannot read: {e}")
    return []


def yaml_files(*dirs: Path) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        files += sorted(p for p in d.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    return files


def port_of(address: str | None) -> int | None:
    """The port of `host:port` / `[v6]:port`."""
    if not address or ":" not in address:
        return None
    try:
        return int(address.rsplit(":", 1)[1])
    except ValueError:
        return None


def toml_get(config: dict, key: tuple[str, str]) -> object:
    return config.get(key[0], {}).get(key[1])


DEFAULT_LISTEN = {("ingest", "listen"): "127.0.0.1:8080", ("admin", "listen"): "127.0.0.1:8081"}


def secret_envs(config: dict) -> set[str]:
    """Environment variables the config's secret references name (`env = "…"`)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            env = value.get("env")
            if isinstance(env, str) and set(value) <= {"id", "env", "value", "file"}:
                found.add(env)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(config)
    return found


def parse_toml(text: str, where: object, report: Report) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        report.problem(where, f"invalid TOML: {e}")
        return None


def arg_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def listen_address(subcommand: str, args: list[str], config: dict | None) -> str | None:
    """The address `hookstream SUBCOMMAND` serves /healthz on."""
    listen = SERVICES[subcommand]["listen"]
    if isinstance(listen, str):
        return arg_value(args, listen)
    if config is None:
        return None
    for key in listen:
        value = toml_get(config, key)
        if value:
            return str(value)
    return DEFAULT_LISTEN.get(listen[-1])


def expected_port(subcommand: str, args: list[str], config: dict | None, where: str, report: Report) -> int | None:
    """The port of listen_address; a problem if it is loopback-only (no probe or scrape reaches it)."""
    address = listen_address(subcommand, args, config)
    if address is None:
        return None
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "::1") or host.startswith("127."):
        report.problem(where, f"`hookstream {subcommand}` listens on {address}: loopback only, unreachable for probes and Prometheus")
    return port_of(address)


# ------------------------------------------------------------------------------ Kubernetes

def load_kubernetes_validate(report: Report, require: bool):
    try:
        import kubernetes_validate  # type: ignore
    except ImportError:
        message = ("kubernetes-validate is not installed: schema validation skipped, structural "
                   "checks only (pip install kubernetes-validate==1.37.0)")
        if require:
            report.problem("deploy/", message)
        else:
            report.note(message)
        return None
    return kubernetes_validate


def check_deploy(report: Report, require_tools: bool) -> int:
    validator = load_kubernetes_validate(report, require_tools)
    kustomization_path = DEPLOY / "kustomization.yaml"
    objects: list[tuple[Path, dict]] = []
    manifest_files = []
    for path in yaml_files(DEPLOY):
        docs = load_yaml_documents(path, report)
        if path == kustomization_path:
            continue
        manifest_files.append(path)
        for i, doc in enumerate(docs):
            where = f"{rel(path)} (document {i + 1})"
            if not isinstance(doc, dict):
                report.problem(where, "not a mapping")
                continue
            for key in ("apiVersion", "kind"):
                if not isinstance(doc.get(key), str) or not doc[key]:
                    report.problem(where, f"missing `{key}`")
            name = (doc.get("metadata") or {}).get("name")
            if not isinstance(name, str) or not name:
                report.problem(where, "missing `metadata.name`")
                continue
            objects.append((path, doc))
            if validator is not None and isinstance(doc.get("kind"), str) and isinstance(doc.get("apiVersion"), str):
                try:
                    validator.validate(doc, K8S_VERSION, strict=True)
                except validator.ValidationError as e:
                    path_in = ".".join(str(p) for p in e.absolute_path) or "(root)"
                    report.problem(f"{rel(path)} {doc['kind']}/{name}",
                                   f"Kubernetes {K8S_VERSION} schema: {path_in}: {e.message}")
                except validator.SchemaNotFoundError as e:
                    report.problem(f"{rel(path)} {doc['kind']}/{name}", f"no schema: {e}")
    if validator is not None:
        report.note(f"kubernetes-validate: {len(objects)} objects validated against Kubernetes {K8S_VERSION} (strict)")

    check_kustomization(report, kustomization_path, manifest_files)

    by_kind: dict[str, list[tuple[Path, dict]]] = {}
    for path, doc in objects:
        by_kind.setdefault(doc.get("kind"), []).append((path, doc))
    names = {}
    for path, doc in objects:
        key = (doc.get("kind"), doc["metadata"]["name"])
        if key in names:
            report.problem(path, f"{key[0]}/{key[1]} is defined twice (also in {rel(names[key])})")
        names[key] = path

    for _, doc in by_kind.get("Secret", []):
        for key, value in (doc.get("stringData") or {}).items():
            DEPLOY_ENV[key] = str(value)
    # The hookstream.toml of the ConfigMap(s), by ConfigMap name.
    configs: dict[str, dict] = {}
    for path, cm in by_kind.get("ConfigMap", []):
        text = (cm.get("data") or {}).get("hookstream.toml")
        if text is not None:
            parsed = parse_toml(text, f"{rel(path)} ConfigMap/{cm['metadata']['name']} hookstream.toml", report)
            if parsed is not None:
                configs[cm["metadata"]["name"]] = parsed
                DEPLOY_TOMLS.append((f"{rel(path)} ConfigMap/{cm['metadata']['name']}", text))
    if not configs:
        report.problem("deploy/", "no ConfigMap with a `hookstream.toml` key")
    secrets = {doc["metadata"]["name"]: set((doc.get("stringData") or {}) | (doc.get("data") or {}))
               for _, doc in by_kind.get("Secret", [])}

    workloads = []
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        workloads += by_kind.get(kind, [])
    seen_subcommands: set[str] = set()
    for path, workload in workloads:
        sub = check_workload(report, path, workload, configs, secrets, by_kind)
        seen_subcommands |= sub
    for sub in SERVICES:
        if sub not in seen_subcommands:
            report.problem("deploy/", f"no workload runs `hookstream {sub}`")

    for path, service in by_kind.get("Service", []):
        check_service(report, path, service, workloads)
    for path, pdb in by_kind.get("PodDisruptionBudget", []):
        selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(labels_match(selector, template_labels(w)) for _, w in workloads):
            report.problem(f"{rel(path)} PodDisruptionBudget/{pdb['metadata']['name']}",
                           f"selector {selector} matches no workload's pods")
    return len(objects)


def check_kustomization(report: Report, path: Path, manifest_files: list[Path]) -> None:
    if not path.exists():
        report.problem(path, "missing")
        return
    docs = load_yaml_documents(path, report)
    if not docs or not isinstance(docs[0], dict):
        report.problem(path, "empty or not a mapping")
        return
    k = docs[0]
    if k.get("kind") != "Kustomization":
        report.problem(path, "kind is not Kustomization")
    listed = k.get("resources") or []
    for r in listed:
        if not (DEPLOY / r).exists():
            report.problem(path, f"resource `{r}` does not exist")
    listed_paths = {(DEPLOY / r).resolve() for r in listed}
    for f in manifest_files:
        if f.parent == DEPLOY and f.resolve() not in listed_paths:
            report.problem(path, f"`{f.name}` is not listed in resources")
    for image in k.get("images") or []:
        if image.get("name") != "hookstream":
            report.problem(path, f"images: `{image.get('name')}` is not the hookstream image")


def template_labels(workload: dict) -> dict:
    return ((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_workload(report: Report, path: Path, w: dict, configs: dict, secrets: dict, by_kind: dict) -> set[str]:
    kind, name = w["kind"], w["metadata"]["name"]
    where = f"{rel(path)} {kind}/{name}"
    spec = w.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not labels_match(selector, template_labels(w)):
        report.problem(where, f"spec.selector.matchLabels {selector} does not match the pod template's labels")
    pod_security = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        report.problem(where, "automountServiceAccountToken should be false (the services never call the API server)")
    annotations = (template.get("metadata") or {}).get("annotations") or {}

    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    claim_templates = {(c.get("metadata") or {}).get("name"): c for c in spec.get("volumeClaimTemplates") or []}
    containers = pod.get("containers") or []
    if not containers:
        report.problem(where, "no containers")
    subcommands: set[str] = set()
    for c in containers + (pod.get("initContainers") or []):
        cwhere = f"{where} container {c.get('name')}"
        if not c.get("image"):
            report.problem(cwhere, "no image")
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(part) or {}):
                    report.problem(cwhere, f"resources.{part}.{res} is not set")
        security = c.get("securityContext") or {}
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            report.problem(cwhere, "runAsNonRoot is not set (pod or container securityContext)")
        if security.get("allowPrivilegeEscalation") is not False:
            report.problem(cwhere, "securityContext.allowPrivilegeEscalation should be false")
        if security.get("readOnlyRootFilesystem") is not True:
            report.problem(cwhere, "securityContext.readOnlyRootFilesystem should be true")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            report.problem(cwhere, "securityContext.capabilities.drop should contain ALL")

        mounts = c.get("volumeMounts") or []
        for m in mounts:
            if m.get("name") not in volumes and m.get("name") not in claim_templates:
                report.problem(cwhere, f"volumeMount `{m.get('name')}` names no volume or volumeClaimTemplate")
        for ref in c.get("envFrom") or []:
            sname = (ref.get("secretRef") or {}).get("name")
            if sname and sname not in secrets and not (ref.get("secretRef") or {}).get("optional"):
                report.problem(cwhere, f"envFrom secretRef `{sname}` is not a Secret of deploy/")

        # The image's entrypoint is `hookstream`; a `command` may repeat it.
        args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if args and os.path.basename(args[0]) == "hookstream":
            args = args[1:]
        sub = args[0] if args else None
        if sub not in SERVICES:
            continue
        subcommands.add(sub)
        if arg_value(args, "--config") != CONFIG_PATH:
            report.problem(cwhere, f"--config should be {CONFIG_PATH}")
        # The config file: a ConfigMap volume on /etc/hookstream, without subPath (a subPath
        # mount is never updated, which would defeat reloading on change).
        config = None
        config_mounts = [m for m in mounts
                         if m.get("mountPath") == CONFIG_PATH
                         or CONFIG_PATH.startswith(m.get("mountPath", "").rstrip("/") + "/")]
        if not config_mounts:
            report.problem(cwhere, f"nothing is mounted at {os.path.dirname(CONFIG_PATH)}")
        for m in config_mounts:
            if m.get("subPath"):
                report.problem(cwhere, f"the config volume is mounted with subPath: Kubernetes never updates such a mount, so the config could not reload")
            cm = (volumes.get(m.get("name")) or {}).get("configMap") or {}
            if cm.get("name") not in configs:
                report.problem(cwhere, f"the volume at {m.get('mountPath')} is not a ConfigMap with hookstream.toml")
            else:
                config = configs[cm["name"]]
        if config is not None:
            env_names = {e.get("name") for e in c.get("env") or []}
            from_secrets = set()
            for ref in c.get("envFrom") or []:
                from_secrets |= secrets.get((ref.get("secretRef") or {}).get("name"), set())
            for var in sorted(secret_envs(config) - env_names - from_secrets):
                report.problem(cwhere, f"hookstream.toml names the environment variable {var}, which the container does not get")
            if sub == "process":
                state_dir = toml_get(config, ("processor", "state_dir"))
                state_mounts = [m for m in mounts if m.get("mountPath") == state_dir]
                if not state_mounts:
                    report.problem(cwhere, f"processor.state_dir {state_dir} is not a mounted volume")
                elif kind == "StatefulSet" and state_mounts[0].get("name") not in claim_templates:
                    report.problem(cwhere, f"processor.state_dir {state_dir} is not a volumeClaimTemplate")

        # Probes.
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        numbers = set(ports.values())
        want = expected_port(sub, args, config, cwhere, report)
        if want is None:
            report.problem(cwhere, f"cannot tell the port `hookstream {sub}` serves /healthz on (listen address unset?)")
        elif want not in numbers:
            report.problem(cwhere, f"port {want} (the listen address of `hookstream {sub}`) is not a declared containerPort")
        for probe_kind, required_path in SERVICES[sub]["probes"].items():
            if probe_kind not in c:
                report.problem(cwhere, f"no {probe_kind}")
            elif required_path and ((c[probe_kind].get("httpGet") or {}).get("path")) != required_path:
                report.problem(cwhere, f"{probe_kind} should be GET {required_path}")
        for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = c.get(probe_kind)
            if probe is None:
                continue
            get = probe.get("httpGet")
            if not get:
                report.problem(cwhere, f"{probe_kind} is not an httpGet probe")
                continue
            if get.get("path") not in PROBE_PATHS:
                report.problem(cwhere, f"{probe_kind} path {get.get('path')!r} is not one of {sorted(PROBE_PATHS)}")
            port = get.get("port")
            number = ports.get(port) if isinstance(port, str) else port
            if number is None or number not in numbers:
                report.problem(cwhere, f"{probe_kind} port {port!r} is not a declared containerPort")
            elif want is not None and number != want:
                report.problem(cwhere, f"{probe_kind} port {number} is not the port `hookstream {sub}` serves /healthz on ({want})")
        if sub == "process":
            startup = c.get("startupProbe") or {}
            budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            if budget < 600:
                report.problem(cwhere, f"startupProbe allows {budget} s: give the processor at least 10 minutes to start")

        # Prometheus scrape annotations (admin serves no /metrics).
        if sub != "admin":
            if annotations.get("prometheus.io/scrape") != "true":
                report.problem(where, "pod template lacks the prometheus.io/scrape: \"true\" annotation")
            if want is not None and annotations.get("prometheus.io/port") != str(want):
                report.problem(where, f"prometheus.io/port annotation should be \"{want}\"")

    if kind == "StatefulSet":
        if spec.get("podManagementPolicy") != "Parallel":
            report.problem(where, "podManagementPolicy should be Parallel (a restoring pod must not hold the others back)")
        service_name = spec.get("serviceName")
        headless = [s for _, s in by_kind.get("Service", []) if s["metadata"]["name"] == service_name]
        if not headless:
            report.problem(where, f"serviceName `{service_name}` is not a Service of deploy/")
        elif (headless[0].get("spec") or {}).get("clusterIP") != "None":
            report.problem(where, f"Service `{service_name}` should be headless (clusterIP: None)")
        if not claim_templates:
            report.problem(where, "no volumeClaimTemplates")
    return subcommands


def check_service(report: Report, path: Path, service: dict, workloads: list) -> None:
    where = f"{rel(path)} Service/{service['metadata']['name']}"
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    targets = [w for _, w in workloads if labels_match(selector, template_labels(w))]
    if not targets:
        report.problem(where, f"selector {selector} matches no workload's pods")
        return
    for port in spec.get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        declared = set()
        for w in targets:
            for c in ((w.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
                for p in c.get("ports") or []:
                    declared |= {p.get("name"), p.get("containerPort")}
        if target not in declared:
            report.problem(where, f"targetPort {target!r} is not a containerPort of the pods it selects")


# ------------------------------------------------------------------------------ compose

def check_compose(report: Report) -> set[str]:
    """Returns the uids of the provisioned Grafana datasources."""
    docs = load_yaml_documents(COMPOSE_FILE, report)
    if not docs:
        report.problem(COMPOSE_FILE, "empty")
        return set()
    compose = docs[0]
    services = compose.get("services") or {}
    volumes = set((compose.get("volumes") or {}).keys())
    config = None
    if COMPOSE_TOML.exists():
        config = parse_toml(COMPOSE_TOML.read_text(), COMPOSE_TOML, report)
    else:
        report.problem(COMPOSE_TOML, "missing")

    metrics_ports: dict[str, int] = {}
    for name, svc in services.items():
        where = f"{rel(COMPOSE_FILE)} service {name}"
        if not isinstance(svc, dict):
            report.problem(where, "not a mapping")
            continue
        if not svc.get("image") and not svc.get("build"):
            report.problem(where, "neither image nor build")
        deps = svc.get("depends_on") or []
        for dep in (deps.keys() if isinstance(deps, dict) else deps):
            if dep not in services:
                report.problem(where, f"depends_on `{dep}`, which is not a service")
        for v in svc.get("volumes") or []:
            source = v.split(":", 1)[0] if isinstance(v, str) else (v.get("source") or "")
            if source.startswith((".", "/")):
                if source.startswith(".") and not (COMPOSE / source).exists():
                    report.problem(where, f"bind mount source `{source}` does not exist")
            elif source and source not in volumes:
                report.problem(where, f"named volume `{source}` is not declared under volumes:")
        command = svc.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        command = [str(a) for a in command or []]
        sub = command[0] if command else None
        if sub in SERVICES:
            if arg_value(command, "--config") != CONFIG_PATH:
                report.problem(where, f"--config should be {CONFIG_PATH}")
            if not any(isinstance(v, str) and v.split(":")[1:2] == [CONFIG_PATH] for v in svc.get("volumes") or []):
                report.problem(where, f"does not mount hookstream.toml on {CONFIG_PATH}")
            port = expected_port(sub, command, config, where, report)
            if port is None:
                report.problem(where, f"cannot tell the port `hookstream {sub}` serves /healthz on")
                continue
            published = {str(p).rsplit(":", 1)[-1].split("/")[0] for p in svc.get("ports") or []}
            if str(port) not in published:
                report.problem(where, f"port {port} (its /healthz listener) is not published")
            test = " ".join((svc.get("healthcheck") or {}).get("test") or [])
            m = re.search(r"localhost:(\d+)(/\S*)", test)
            if not m:
                report.problem(where, "no healthcheck querying localhost")
            elif int(m.group(1)) != port or m.group(2) not in PROBE_PATHS:
                report.problem(where, f"healthcheck {m.group(0)} should query /healthz or /readyz on port {port}")
            if sub != "admin":
                metrics_ports[name] = port
    for sub in SERVICES:
        if not any((s.get("command") or [None])[0] == sub for s in services.values() if isinstance(s, dict)):
            report.problem(COMPOSE_FILE, f"no service runs `hookstream {sub}`")
    for needed in ("prometheus", "grafana"):
        if needed not in services:
            report.problem(COMPOSE_FILE, f"no `{needed}` service")
    if config is not None:
        for name, svc in services.items():
            if isinstance(svc, dict) and (svc.get("command") or [None])[0] in SERVICES:
                environment = svc.get("environment") or {}
                if isinstance(environment, list):
                    environment = dict(e.split("=", 1) if "=" in e else (e, "") for e in environment)
                for key, value in environment.items():
                    m = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
                    COMPOSE_ENV[key] = m.group(1) if m else str(value)
                for var in sorted(secret_envs(config) - set(environment)):
                    report.problem(f"{rel(COMPOSE_FILE)} service {name}",
                                   f"hookstream.toml names the environment variable {var}, which the service does not get")

    check_prometheus_config(report, services, metrics_ports)
    return check_grafana_provisioning(report, services)


def mount_target(service: dict, source: str) -> str | None:
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2 and os.path.normpath(parts[0]) == os.path.normpath(source):
                return parts[1]
    return None


def check_prometheus_config(report: Report, services: dict, metrics_ports: dict[str, int]) -> None:
    docs = load_yaml_documents(PROMETHEUS_CONFIG, report)
    if not docs:
        report.problem(PROMETHEUS_CONFIG, "empty")
        return
    prom = docs[0]
    for rf in prom.get("rule_files") or []:
        if not (PROMETHEUS_CONFIG.parent / rf).exists():
            report.problem(PROMETHEUS_CONFIG, f"rule file `{rf}` does not exist (relative to prometheus.yml)")
    if "alerts.yml" not in [Path(rf).name for rf in prom.get("rule_files") or []]:
        report.problem(PROMETHEUS_CONFIG, "rule_files does not load alerts.yml")
    scraped: dict[str, int] = {}
    for job in prom.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            if "service" in (sc.get("labels") or {}):
                report.problem(PROMETHEUS_CONFIG, f"job {job.get('job_name')}: a `service` target label would rename the metrics' own `service` label to exported_service")
            for t in sc.get("targets") or []:
                host, _, port = t.rpartition(":")
                if host in services:
                    scraped[host] = int(port)
                elif host != "localhost":
                    report.problem(PROMETHEUS_CONFIG, f"target {t}: `{host}` is not a compose service")
    for name, port in metrics_ports.items():
        if scraped.get(name) != port:
            report.problem(PROMETHEUS_CONFIG, f"does not scrape {name}:{port} (the service's /metrics listener)")
    prometheus = services.get("prometheus") or {}
    target = mount_target(prometheus, "./prometheus")
    command = " ".join(str(a) for a in prometheus.get("command") or [])
    m = re.search(r"--config\.file=(\S+)", command)
    if target is None:
        report.problem(COMPOSE_FILE, "the prometheus service does not mount ./prometheus")
    elif m and os.path.dirname(m.group(1)) != target.rstrip("/"):
        report.problem(COMPOSE_FILE, f"prometheus --config.file {m.group(1)} is not in the mounted {target}")


def check_grafana_provisioning(report: Report, services: dict) -> set[str]:
    grafana = services.get("grafana") or {}
    datasource_uids: set[str] = set()
    for path in yaml_files(GRAFANA_PROVISIONING / "datasources"):
        for doc in load_yaml_documents(path, report):
            for ds in doc.get("datasources") or []:
                if not ds.get("uid"):
                    report.problem(path, f"datasource {ds.get('name')} has no uid (dashboards refer to it by uid)")
                else:
                    datasource_uids.add(ds["uid"])
                url = ds.get("url", "")
                host = re.sub(r"^https?://", "", url).split(":")[0].split("/")[0]
                if host not in services:
                    report.problem(path, f"datasource url {url}: `{host}` is not a compose service")
    if not datasource_uids:
        report.problem(GRAFANA_PROVISIONING / "datasources", "no datasource")
    provisioning_target = mount_target(grafana, "./grafana/provisioning")
    if provisioning_target != "/etc/grafana/provisioning":
        report.problem(COMPOSE_FILE, "grafana does not mount ./grafana/provisioning on /etc/grafana/provisioning")
    dashboards_target = mount_target(grafana, "./grafana/dashboards")
    provider_paths = []
    for path in yaml_files(GRAFANA_PROVISIONING / "dashboards"):
        for doc in load_yaml_documents(path, report):
            for p in doc.get("providers") or []:
                provider_paths.append((p.get("options") or {}).get("path"))
    if not provider_paths:
        report.problem(GRAFANA_PROVISIONING / "dashboards", "no dashboard provider")
    elif dashboards_target is None or dashboards_target.rstrip("/") not in [str(p).rstrip("/") for p in provider_paths]:
        report.problem(COMPOSE_FILE, f"grafana mounts ./grafana/dashboards on {dashboards_target}, which no dashboard provider reads ({provider_paths})")
    return datasource_uids


# ------------------------------------------------------------------------------ dashboards

def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboards(report: Report) -> list[tuple[Path, dict]]:
    out = []
    files = dashboard_files()
    if not files:
        report.problem(DASHBOARDS, "no dashboards")
    for path in files:
        try:
            out.append((path, json.loads(path.read_text())))
        except (json.JSONDecodeError, OSError) as e:
            report.problem(path, f"invalid JSON: {e}")
    return out


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for p in dashboard.get("panels") or []:
        panels.append(p)
        panels += p.get("panels") or []  # collapsed rows
    return panels


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every target and query variable."""
    exprs = []
    for p in all_panels(dashboard):
        for t in p.get("targets") or []:
            if t.get("expr"):
                exprs.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                exprs.append((f"variable ${v.get('name')}", q))
    return exprs


def check_dashboards(report: Report, dashboards: list[tuple[Path, dict]], datasource_uids: set[str]) -> None:
    uids: dict[str, Path] = {}
    for path, d in dashboards:
        if not isinstance(d, dict):
            report.problem(path, "not a JSON object")
            continue
        uid = d.get("uid")
        if not uid:
            report.problem(path, "no uid")
        elif uid in uids:
            report.problem(path, f"uid `{uid}` is also the uid of {rel(uids[uid])}")
        else:
            uids[uid] = path
        if not d.get("title"):
            report.problem(path, "no title")
        if not isinstance(d.get("schemaVersion"), int):
            report.problem(path, "no schemaVersion")
        panels = all_panels(d)
        if not panels:
            report.problem(path, "no panels")
        variables = {v.get("name") for v in (d.get("templating") or {}).get("list") or []}
        ids = set()
        for p in panels:
            pwhere = f"{rel(path)} panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids:
                report.problem(pwhere, "duplicate panel id")
            ids.add(p.get("id"))
            if not p.get("type") or not p.get("title"):
                report.problem(pwhere, "no type or title")
            if p.get("type") == "row":
                continue
            grid = p.get("gridPos") or {}
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid.get("x", 0) + grid.get("w", 0) > 24:
                report.problem(pwhere, f"bad gridPos {grid}")
            check_datasource(report, pwhere, p.get("datasource"), datasource_uids, variables)
            targets = p.get("targets") or []
            if not targets:
                report.problem(pwhere, "no targets")
            refs = set()
            for t in targets:
                if not (t.get("expr") or "").strip():
                    report.problem(pwhere, f"target {t.get('refId')} has no expr")
                if t.get("refId") in refs:
                    report.problem(pwhere, f"duplicate refId {t.get('refId')}")
                refs.add(t.get("refId"))
                if "datasource" in t:
                    check_datasource(report, f"{pwhere} target {t.get('refId')}", t["datasource"], datasource_uids, variables)
        for v in (d.get("templating") or {}).get("list") or []:
            if v.get("type") == "query":
                check_datasource(report, f"{rel(path)} variable ${v.get('name')}", v.get("datasource"), datasource_uids, variables)
        for where, expr in dashboard_exprs(d):
            for var in re.findall(r"\$\{?(\w+)", expr):
                if var not in variables and var not in GRAFANA_BUILTINS:
                    report.problem(f"{rel(path)} {where}", f"uses ${var}, which is neither a variable of the dashboard nor a Grafana built-in")


def check_datasource(report: Report, where: str, ds: object, uids: set[str], variables: set[str]) -> None:
    if not isinstance(ds, dict):
        report.problem(where, "no datasource (set {type: prometheus, uid: …})")
        return
    uid = str(ds.get("uid", ""))
    if uid.startswith("$") and uid.strip("${}") in variables:
        return
    if uids and uid not in uids:
        report.problem(where, f"datasource uid `{uid}` is not provisioned ({sorted(uids)})")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with its variables replaced, for promtool to parse."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_BUILTINS.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


# ------------------------------------------------------------------------------ alerts

def load_alert_rules(report: Report) -> list[dict]:
    docs = load_yaml_documents(ALERTS, report)
    if not docs or not isinstance(docs[0], dict) or not docs[0].get("groups"):
        report.problem(ALERTS, "no `groups`")
        return []
    rules = []
    for g in docs[0]["groups"]:
        for r in g.get("rules") or []:
            r = dict(r)
            r["_group"] = g.get("name")
            rules.append(r)
    return rules


def check_alerts(report: Report, rules: list[dict]) -> None:
    docs = load_yaml_documents(ALERTS, report)
    groups = (docs[0] or {}).get("groups") if docs else []
    names = set()
    for g in groups or []:
        if not g.get("name"):
            report.problem(ALERTS, "a group has no name")
        elif g["name"] in names:
            report.problem(ALERTS, f"group name {g['name']} is used twice")
        names.add(g.get("name"))
    alerts = set()
    for r in rules:
        where = f"{rel(ALERTS)} group {r['_group']} rule {r.get('alert') or r.get('record')}"
        if "record" in r:
            continue
        if not r.get("alert"):
            report.problem(where, "no `alert` name")
        elif r["alert"] in alerts:
            report.problem(where, "alert name used twice")
        alerts.add(r.get("alert"))
        if not str(r.get("expr") or "").strip():
            report.problem(where, "no expr")
        if "for" not in r:
            report.problem(where, "no `for`")
        elif not re.fullmatch(r"(\d+[smhdwy])+", str(r["for"])):
            report.problem(where, f"`for: {r['for']}` is not a Prometheus duration")
        severity = (r.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            report.problem(where, f"labels.severity {severity!r} is not one of {sorted(SEVERITIES)}")
        annotations = r.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(annotations.get(key) or "").strip():
                report.problem(where, f"no annotations.{key}")
    if not alerts:
        report.problem(ALERTS, "no alert rules")


# ------------------------------------------------------------------------------ promtool

def run_promtool(report: Report, dashboards: list[tuple[Path, dict]], require: bool) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = ("promtool is not on PATH: Prometheus config, rules and PromQL not checked "
                   "(Debian/Ubuntu: apt-get install --no-install-recommends prometheus)")
        if require:
            report.problem("compose/prometheus/", message)
        else:
            report.note(message)
        return

    def run(args: list[str], where: object) -> bool:
        result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            report.problem(where, f"promtool {' '.join(args)} failed:\n    " + output.replace("\n", "\n    "))
            return False
        return True

    version = subprocess.run([promtool, "--version"], capture_output=True, text=True)
    first = (version.stdout or version.stderr).splitlines()[:1]
    checked = ["check config", "check rules"]
    run(["check", "config", rel(PROMETHEUS_CONFIG)], PROMETHEUS_CONFIG)
    run(["check", "rules", rel(ALERTS)], ALERTS)
    for test in sorted(PROMETHEUS_DIR.glob("*_test.yml")):
        run(["test", "rules", rel(test)], test)
        checked.append(f"test rules {test.name}")
    # The dashboards' PromQL, as recording rules promtool parses.
    rules = []
    for path, d in dashboards:
        for where, expr in dashboard_exprs(d):
            if where.startswith("variable"):
                continue  # label_values(…) is Grafana's, not PromQL
            rules.append({"record": f"dashboard:{path.stem}:{len(rules)}", "expr": grafana_to_promql(expr),
                          "labels": {"where": f"{path.name} {where}"}})
    if rules:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "dashboards.rules.yml"
            file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
            result = subprocess.run([promtool, "check", "rules", str(file)], capture_output=True, text=True)
            if result.returncode != 0:
                output = (result.stdout + result.stderr).strip()
                # Name the failing target: promtool reports the rule's index.
                for m in set(re.findall(r"group \"dashboards\", rule (\d+)", output)):
                    i = int(m) - 1
                    if 0 <= i < len(rules):
                        report.problem(rules[i]["labels"]["where"], f"invalid PromQL: {rules[i]['expr']}")
                report.problem(DASHBOARDS, "promtool refuses dashboard queries:\n    " + output.replace("\n", "\n    "))
        checked.append(f"{len(rules)} dashboard queries")
    report.note(f"promtool ({first[0] if first else '?'}): {', '.join(checked)}")


# ------------------------------------------------------------------------------ check-config

# Filled in by check_deploy / check_compose: the TOML texts of the ConfigMaps, and the
# environment the services get (Secret values, compose defaults).
DEPLOY_TOMLS: list[tuple[str, str]] = []
DEPLOY_ENV: dict[str, str] = {}
COMPOSE_ENV: dict[str, str] = {}


def run_check_config(report: Report, binary: str) -> None:
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)) and not shutil.which(binary):
        report.problem(binary, "--hookstream: not an executable")
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
    cases = [(rel(COMPOSE_TOML), COMPOSE_TOML.read_text(), COMPOSE_ENV)]
    cases += [(where, text, DEPLOY_ENV) for where, text in DEPLOY_TOMLS]
    for where, text, env in cases:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "hookstream.toml"
            file.write_text(text)
            try:
                result = subprocess.run([binary, "check-config", str(file)], capture_output=True,
                                        text=True, env={**base, **env}, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as e:
                report.problem(where, f"{binary} check-config: {e}")
                continue
            if result.returncode != 0:
                output = (result.stdout + result.stderr).strip().replace(str(file), "hookstream.toml")
                report.problem(where, "hookstream check-config refuses it:\n    " + output.replace("\n", "\n    "))
    report.note(f"{binary} check-config: {len(cases)} configuration files")


# ------------------------------------------------------------------------------ metrics

def queried_metrics(dashboards: list[tuple[Path, dict]], rules: list[dict]) -> list[str]:
    exprs = [expr for _, d in dashboards for _, expr in dashboard_exprs(d)]
    exprs += [str(r.get("expr") or "") for r in rules]
    names = set()
    for expr in exprs:
        for name in METRIC.findall(expr):
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            names.add(name)
    return sorted(names)


def source_metric_names() -> set[str]:
    """Metric names that appear as string literals in the Rust sources."""
    names = set()
    for path in ROOT.rglob("*.rs"):
        if "target" in path.parts or ".git" in path.parts:
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        names |= set(re.findall(r'"(hookstream_[a-z0-9_]+)"', text))
    return names


# ------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list-metrics", action="store_true",
                        help="print the hookstream metrics dashboards and alert rules query, one per line, and exit")
    parser.add_argument("--require-tools", action="store_true",
                        help="fail when promtool or kubernetes-validate is missing instead of skipping their checks")
    parser.add_argument("--hookstream", metavar="BIN", default=os.environ.get("HOOKSTREAM_BIN"),
                        help="a hookstream binary: run its check-config on compose/hookstream.toml and the ConfigMap's hookstream.toml")
    args = parser.parse_args()

    if yaml is None:
        print("check-ops: PyYAML is required (pip install pyyaml; Debian: apt-get install python3-yaml)",
              file=sys.stderr)
        return 2
    if tomllib is None and not args.list_metrics:
        print("check-ops: Python 3.11+ (tomllib) or the tomli package is required", file=sys.stderr)
        return 2

    report = Report()
    dashboards = load_dashboards(report)
    rules = load_alert_rules(report)
    if args.list_metrics:
        if report.problems:
            for p in report.problems:
                print(f"check-ops: {p}", file=sys.stderr)
            return 1
        for name in queried_metrics(dashboards, rules):
            print(name)
        return 0

    for path in yaml_files(COMPOSE):
        load_yaml_documents(path, report)
    objects = check_deploy(report, args.require_tools)
    datasource_uids = check_compose(report)
    check_dashboards(report, dashboards, datasource_uids)
    check_alerts(report, rules)
    run_promtool(report, dashboards, args.require_tools)
    if args.hookstream:
        run_check_config(report, args.hookstream)

    metrics = queried_metrics(dashboards, rules)
    unknown = sorted(set(metrics) - source_metric_names())
    if unknown:
        report.note("queried but not found as a string literal in any .rs file (the test that scrapes "
                    "the running services decides): " + ", ".join(unknown))

    for note in report.notes:
        print(f"check-ops: note: {note}", file=sys.stderr)
    summary = (f"{objects} Kubernetes objects, {len(yaml_files(COMPOSE))} compose YAML files, "
               f"{len(dashboards)} dashboards, {sum(1 for r in rules if 'alert' in r)} alert rules, "
               f"{len(metrics)} metrics queried")
    if report.problems:
        for p in report.problems:
            print(f"check-ops: {p}", file=sys.stderr)
        print(f"check-ops: FAILED, {len(report.problems)} problem(s) ({summary})", file=sys.stderr)
        return 1
    print(f"check-ops: ok ({summary})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
