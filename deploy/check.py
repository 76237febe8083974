#!/usr/bin/env python3
"""Checks deploy/ without Docker, Kubernetes or systemd: parses and validates
every file, and runs each deployment's airlock command as a plain process.

Run through deploy/check, which installs PyYAML when it is missing and finds
the airlock binary. Every check prints one line (ok / FAIL / skip); the exit
status is 1 when any check failed.

Plain-process runs map the paths the deployments use inside containers
(/etc/airlock/airlock.toml, /var/lib/airlock, the CA volume, Secret mounts)
to a temp dir, and their listen addresses to free loopback ports; everything
else (arguments, environment, config text, probe commands) is taken from the
files as written.
"""

import argparse
import base64
import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
PLACEHOLDER_RE = re.compile(r"^miosa-tok-[A-Za-z0-9]{22,128}$")


# --- reporting --------------------------------------------------------------


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = []
        self.skipped = 0

    def ok(self, name, detail=""):
        self.passed += 1
        print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, name, why):
        self.failed.append(name)
        print(f"FAIL  {name}: {why}", flush=True)

    def skip(self, name, why):
        self.skipped += 1
        print(f"skip  {name}: {why}", flush=True)

    def check(self, name, problems, detail=""):
        """`problems` is a list of strings; empty means the check passed."""
        if problems:
            self.fail(name, "; ".join(problems))
        else:
            self.ok(name, detail)


R = Report()


def rel(path):
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


def have(tool):
    return shutil.which(tool) is not None


def run_tool(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def tool_output(p):
    return (p.stdout + p.stderr).strip()[-2000:]


# --- loading ----------------------------------------------------------------


def yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def load_yaml_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            docs.append((path, doc))
    return docs


def find(docs, kind, name, namespace=None):
    for _, d in docs:
        m = d.get("metadata", {})
        if d.get("kind") == kind and m.get("name") == name:
            if namespace is None or m.get("namespace") == namespace:
                return d
    return None


def pod_spec(doc):
    if doc.get("kind") == "Pod":
        return doc.get("spec", {})
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(doc):
    if doc.get("kind") == "Pod":
        return doc.get("metadata", {}).get("labels", {}) or {}
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def all_containers(spec):
    return list(spec.get("initContainers", []) or []) + list(spec.get("containers", []) or [])


def container(spec, name):
    for c in all_containers(spec):
        if c.get("name") == name:
            return c
    raise KeyError(f"no container {name!r}")


def env_list(c):
    return {e["name"]: e for e in c.get("env", []) or []}


def secret_data(secret):
    out = dict(secret.get("stringData", {}) or {})
    for k, v in (secret.get("data", {}) or {}).items():
        out[k] = base64.b64decode(v).decode()
    return out


def toml_value(text, section, key):
    """A string value from a small TOML text, without a TOML parser (3.11's
    tomllib would do, but older Pythons lack it)."""
    current = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            current = s.strip("[]").strip()
            continue
        m = re.match(r'^([A-Za-z_]+)\s*=\s*"([^"]*)"', s)
        if m and current == section and m.group(1) == key:
            return m.group(2)
    return None


# --- Dockerfile -------------------------------------------------------------


def parse_dockerfile(path):
    """Stages as dicts: base, name, and the instructions in order."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    stages = []
    args = {}  # ARG defaults before the first FROM: what FROM ${NAME} means
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        rest = rest.strip()
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif word == "FROM":
            rest = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"base": parts[0], "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((word, rest))
    return stages


def stage_values(stage, word):
    return [rest for w, rest in stage["instructions"] if w == word]


def dockerfile_env(stage):
    env = {}
    for rest in stage_values(stage, "ENV"):
        for token in shlex.split(rest):
            k, _, v = token.partition("=")
            env[k] = v
    return env


def exec_form(rest, what):
    try:
        value = json.loads(rest)
    except ValueError:
        raise ValueError(f"{what} is not in exec (JSON array) form: {rest}")
    if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        raise ValueError(f"{what} is not a JSON array of strings")
    return value


def healthcheck_cmd(stage):
    for rest in stage_values(stage, "HEALTHCHECK"):
        i = rest.find("CMD")
        if i >= 0:
            return exec_form(rest[i + 3 :].strip(), "HEALTHCHECK CMD")
    return None


def check_dockerfile():
    path = DEPLOY / "Dockerfile"
    try:
        stages = parse_dockerfile(path)
    except Exception as e:  # noqa: BLE001
        R.fail("Dockerfile parses", str(e))
        return
    final = stages[-1]
    problems = []
    for s in stages:
        base = s["base"]
        if base in {st["name"] for st in stages if st["name"]}:
            continue
        image, _, tag = base.partition("@")[0].rpartition(":")
        if "@sha256:" in base:
            continue
        if not image or not tag or tag == "latest" or "$" in base:
            problems.append(f"base image {base} has no fixed tag")
    R.check("Dockerfile: base images pinned to a tag", problems, ", ".join(s["base"] for s in stages))

    users = stage_values(final, "USER")
    user = users[-1].split(":")[0] if users else "root"
    R.check(
        "Dockerfile: final stage runs as a non-root user",
        [] if user not in ("root", "0") else [f"USER is {user}"],
        f"USER {users[-1] if users else '(none)'}",
    )
    problems = []
    try:
        hc = healthcheck_cmd(final)
        if not hc:
            problems.append("no HEALTHCHECK CMD in the final stage")
        elif hc[0] not in ("curl", "airlock", "/usr/bin/curl", "/usr/local/bin/airlock"):
            problems.append(f"HEALTHCHECK runs {hc[0]}, which the image may not have")
        elif hc[0].endswith("curl") and "curl" not in " ".join(stage_values(final, "RUN")):
            problems.append("HEALTHCHECK uses curl but the final stage does not install it")
    except ValueError as e:
        problems.append(str(e))
    R.check("Dockerfile: HEALTHCHECK present and runnable in the image", problems)

    problems = []
    exposed = set(" ".join(stage_values(final, "EXPOSE")).split())
    for port in ("8080", "8090", "9090"):
        if port not in exposed:
            problems.append(f"port {port} not exposed")
    try:
        entry = exec_form(stage_values(final, "ENTRYPOINT")[-1], "ENTRYPOINT")
        cmd = exec_form(stage_values(final, "CMD")[-1], "CMD")
        if entry != ["airlock"]:
            problems.append(f"ENTRYPOINT is {entry}, expected [\"airlock\"]")
        if cmd[:1] != ["up"] or "--config" not in cmd or "--data-dir" not in cmd:
            problems.append(f"CMD {cmd} does not run `up --config … --data-dir …`")
    except (ValueError, IndexError) as e:
        problems.append(f"ENTRYPOINT/CMD: {e}")
    env = dockerfile_env(final)
    for key in ("AIRLOCK_LISTEN", "AIRLOCK_VAULT_LISTEN", "AIRLOCK_ADMIN_LISTEN"):
        if not env.get(key, "").startswith("0.0.0.0:"):
            problems.append(f"{key} is {env.get(key)!r}, not 0.0.0.0:PORT")
    R.check("Dockerfile: EXPOSE, ENTRYPOINT, CMD and listen env", problems, f"CMD {stage_values(final, 'CMD')[-1]}")

    # What the build copies must be in the context after .dockerignore (the
    # repository root's: the classic builder and BuildKit both read it). Its
    # patterns apply in order, the last match wins, `!` keeps; a pattern that
    # matches a folder matches what is in it. The binary is built on the host
    # (cargo) before `docker build`, so it need not exist yet.
    problems = []
    ignore = ROOT / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.strip().startswith("#")
    ]
    if not ignore.exists():
        problems.append(".dockerignore is missing: the context would hold target/ and .git")

    def in_context(item):
        parts = Path(item).parts
        keep = True
        for pat in patterns:
            neg = pat.startswith("!")
            pat = pat.lstrip("!").strip("/")
            if any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
                keep = neg
        return keep

    needed = []
    for s in stages:
        for rest in stage_values(s, "COPY"):
            if "--from=" in rest:
                continue
            needed += [p for p in shlex.split(rest)[:-1] if not p.startswith("--") and p != "."]
    for item in needed:
        if not item.startswith("target/") and not (ROOT / item).exists():
            problems.append(f"{item} does not exist")
        if not in_context(item):
            problems.append(f"{item} is excluded by .dockerignore")
    for item in (".git", "target/debug", "target/release/deps", "src", "tests/node/node_modules"):
        if in_context(item):
            problems.append(f"{item} is in the build context")
    R.check("Dockerfile: build context holds what it copies, and no more", problems, ", ".join(needed))

    if have("hadolint"):
        p = run_tool(["hadolint", str(path), str(DEPLOY / "sandbox" / "Dockerfile")])
        R.check("hadolint deploy/Dockerfile deploy/sandbox/Dockerfile", [] if p.returncode == 0 else [tool_output(p)])
    else:
        R.skip("hadolint deploy/Dockerfile", "hadolint not installed (the checks above cover the rules that matter)")


# --- YAML and Kubernetes ----------------------------------------------------

NAMESPACED = {"ConfigMap", "Secret", "Pod", "Deployment", "StatefulSet", "Service", "NetworkPolicy"}
WORKLOADS = {"Pod", "Deployment", "StatefulSet"}


def check_yaml_parses():
    for path in yaml_files():
        try:
            n = len(load_yaml_docs(path))
            R.ok(f"YAML parses: {rel(path)}", f"{n} document(s)")
        except yaml.YAMLError as e:
            R.fail(f"YAML parses: {rel(path)}", str(e).replace("\n", " "))


def structure_problems(doc):
    """The schema a missing kubeconform would have caught first."""
    p = []
    kind = doc.get("kind")
    name = doc.get("metadata", {}).get("name")
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str):
            p.append(f"{key} missing")
    if not isinstance(name, str) or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name or ""):
        p.append(f"metadata.name {name!r} is not a DNS name")
    if kind in NAMESPACED and not doc.get("metadata", {}).get("namespace"):
        p.append("metadata.namespace missing")
    if kind in ("ConfigMap", "Secret"):
        for field in ("data", "stringData"):
            for k, v in (doc.get(field) or {}).items():
                if not isinstance(v, str):
                    p.append(f"{field}.{k} is not a string")
    if kind in ("Deployment", "StatefulSet"):
        sel = doc.get("spec", {}).get("selector", {}).get("matchLabels", {})
        labels = pod_labels(doc)
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            p.append("spec.selector.matchLabels does not match the template's labels")
    if kind in WORKLOADS:
        spec = pod_spec(doc)
        volumes = {v.get("name") for v in spec.get("volumes", []) or []}
        claims = {
            t.get("metadata", {}).get("name")
            for t in doc.get("spec", {}).get("volumeClaimTemplates", []) or []
        }
        names = set()
        if not spec.get("containers"):
            p.append("no containers")
        for c in all_containers(spec):
            cname = c.get("name")
            if not cname or cname in names:
                p.append(f"container name {cname!r} missing or repeated")
            names.add(cname)
            image = c.get("image", "")
            tag = image.rpartition(":")[2] if ":" in image else ""
            if not image:
                p.append(f"{cname}: no image")
            elif not tag or tag == "latest" or "/" in tag:
                p.append(f"{cname}: image {image} has no fixed tag")
            for field in ("command", "args"):
                if field in c and not all(isinstance(x, str) for x in c[field]):
                    p.append(f"{cname}: {field} has a non-string item")
            seen = set()
            for e in c.get("env", []) or []:
                if e.get("name") in seen:
                    p.append(f"{cname}: env {e.get('name')} repeated")
                seen.add(e.get("name"))
                if ("value" in e) == ("valueFrom" in e):
                    p.append(f"{cname}: env {e.get('name')} needs exactly one of value, valueFrom")
                if "value" in e and not isinstance(e["value"], str):
                    p.append(f"{cname}: env {e.get('name')} value is not a string")
            for m in c.get("volumeMounts", []) or []:
                if m.get("name") not in volumes | claims:
                    p.append(f"{cname}: volumeMount {m.get('name')} has no volume")
            sc = c.get("securityContext", {}) or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{cname}: securityContext.allowPrivilegeEscalation is not false")
            if "ALL" not in (sc.get("capabilities", {}) or {}).get("drop", []):
                p.append(f"{cname}: capabilities do not drop ALL")
            user = sc.get("runAsUser", (spec.get("securityContext") or {}).get("runAsUser"))
            if user == 0 and set((sc.get("capabilities") or {}).get("add", [])) - {"NET_ADMIN", "NET_RAW"}:
                p.append(f"{cname}: runs as root with more than NET_ADMIN/NET_RAW")
            if user == 0 and cname != "egress-lock":
                p.append(f"{cname}: runs as root")
    if kind == "Service":
        for port in doc.get("spec", {}).get("ports", []) or []:
            if "port" not in port:
                p.append("a Service port has no port")
    if kind == "NetworkPolicy":
        spec = doc.get("spec", {})
        if "podSelector" not in spec:
            p.append("spec.podSelector missing")
        for t in spec.get("policyTypes", []):
            if t not in ("Ingress", "Egress"):
                p.append(f"policyType {t}")
    return p


def check_k8s():
    try:
        docs = k8s_docs()
    except yaml.YAMLError:
        R.fail("Kubernetes manifests", "a file does not parse")
        return None
    for path, doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        R.check(f"k8s structure: {rel(path)} {name}", structure_problems(doc))

    # References between objects.
    problems = []
    for path, doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        ns = doc["metadata"].get("namespace")
        spec = pod_spec(doc)
        for v in spec.get("volumes", []) or []:
            if "configMap" in v and not find(docs, "ConfigMap", v["configMap"]["name"], ns):
                problems.append(f"{doc['metadata']['name']}: ConfigMap {v['configMap']['name']} not defined in {ns}")
            if "secret" in v:
                s = find(docs, "Secret", v["secret"]["secretName"], ns)
                if not s:
                    problems.append(f"{doc['metadata']['name']}: Secret {v['secret']['secretName']} not defined in {ns}")
                else:
                    for item in v["secret"].get("items", []) or []:
                        if item["key"] not in secret_data(s):
                            problems.append(f"Secret {v['secret']['secretName']} has no key {item['key']}")
        for c in all_containers(spec):
            for e in c.get("env", []) or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    s = find(docs, "Secret", ref["name"], ns)
                    if not s or ref["key"] not in secret_data(s):
                        problems.append(f"{c['name']}: env {e['name']} refers to missing {ref['name']}/{ref['key']}")
    for path, doc in docs:
        if doc.get("kind") == "Service":
            ns = doc["metadata"]["namespace"]
            sel = doc["spec"].get("selector", {})
            targets = [
                d
                for _, d in docs
                if d.get("kind") in WORKLOADS
                and d["metadata"].get("namespace") == ns
                and all(pod_labels(d).get(k) == v for k, v in sel.items())
            ]
            if not targets:
                problems.append(f"Service {doc['metadata']['name']} selects no workload")
            for port in doc["spec"].get("ports", []):
                tp = port.get("targetPort", port.get("port"))
                ports = [
                    cp
                    for d in targets
                    for c in all_containers(pod_spec(d))
                    for cp in c.get("ports", []) or []
                ]
                if not any(cp.get("name") == tp or cp.get("containerPort") == tp for cp in ports):
                    problems.append(f"Service {doc['metadata']['name']} targetPort {tp} is no container port")
        if doc.get("kind") == "NetworkPolicy":
            ns = doc["metadata"]["namespace"]
            sel = doc["spec"]["podSelector"].get("matchLabels", {})
            if sel and not any(
                d.get("kind") in WORKLOADS
                and d["metadata"].get("namespace") == ns
                and all(pod_labels(d).get(k) == v for k, v in sel.items())
                for _, d in docs
            ):
                problems.append(f"NetworkPolicy {ns}/{doc['metadata']['name']} selects no pod")
        if doc.get("kind") in NAMESPACED:
            ns = doc["metadata"].get("namespace")
            if not find(docs, "Namespace", ns):
                problems.append(f"{doc['kind']}/{doc['metadata']['name']}: namespace {ns} not defined")
    R.check("k8s references: volumes, Secrets, Services, NetworkPolicies, namespaces", problems)

    # The sandbox pod: its environment agrees with its sidecar and its config.
    problems = []
    pod = find(docs, "Pod", "sandbox")
    cm = find(docs, "ConfigMap", "airlock-sidecar")
    spec = pod_spec(pod)
    sidecar = container(spec, "airlock")
    sandbox = container(spec, "sandbox")
    senv = {k: e.get("value") for k, e in env_list(sandbox).items()}
    listen = env_list(sidecar)["AIRLOCK_LISTEN"]["value"]
    toml = cm["data"]["airlock.toml"]
    if sidecar.get("restartPolicy") != "Always":
        problems.append("the airlock sidecar is not a native sidecar (restartPolicy: Always)")
    names = [c["name"] for c in spec.get("initContainers", [])]
    if names[:1] != ["egress-lock"]:
        problems.append("egress-lock is not the first init container")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if senv.get(var) != f"http://{listen}":
            problems.append(f"sandbox {var}={senv.get(var)} is not the sidecar's http://{listen}")
    placeholder = toml_value(toml, "secret", "placeholder")
    if senv.get("GITHUB_TOKEN") != placeholder or not PLACEHOLDER_RE.match(placeholder or ""):
        problems.append("sandbox GITHUB_TOKEN is not the ConfigMap's placeholder")
    if any(e.get("valueFrom") for e in env_list(sandbox).values()):
        problems.append("the sandbox container reads a Secret")
    sandbox_mounts = {m["name"] for m in sandbox.get("volumeMounts", [])}
    for v in spec["volumes"]:
        if ("secret" in v or "configMap" in v) and v["name"] in sandbox_mounts:
            problems.append(f"the sandbox container mounts {v['name']}")
    ca_mount = next(m for m in sandbox["volumeMounts"] if m["name"] == "airlock-ca")
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "PIP_CERT"):
        if senv.get(var) != f"{ca_mount['mountPath']}/ca-bundle.pem":
            problems.append(f"sandbox {var} is not the CA bundle in the airlock-ca volume")
    for var in ("NODE_EXTRA_CA_CERTS", "DENO_CERT"):
        if senv.get(var) != f"{ca_mount['mountPath']}/ca.pem":
            problems.append(f"sandbox {var} is not ca.pem in the airlock-ca volume")
    if not ca_mount.get("readOnly"):
        problems.append("the sandbox mounts the CA volume writable")
    lock = " ".join(container(spec, "egress-lock").get("args", []))
    uid_rule = re.search(r"--uid-owner (\d+)", lock)
    sidecar_uid = (sidecar.get("securityContext") or {}).get("runAsUser")
    sandbox_uid = (sandbox.get("securityContext") or {}).get("runAsUser")
    if not uid_rule or str(sidecar_uid) != uid_rule.group(1):
        problems.append(f"egress-lock lets uid {uid_rule and uid_rule.group(1)} out, the sidecar runs as {sidecar_uid}")
    if sandbox_uid is None or sandbox_uid in (0, sidecar_uid):
        problems.append(f"the sandbox runs as uid {sandbox_uid}: it must be another, fixed, non-root uid")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("the pod mounts a service account token")
    if spec.get("shareProcessNamespace"):
        problems.append("the pod shares its process namespace")
    R.check("k8s sandbox pod agrees with its sidecar and ConfigMap", problems, f"proxy {listen}")

    vault_secret = find(docs, "Secret", "airlock-vault", "airlock")
    sidecar_secret = find(docs, "Secret", "airlock-sidecar", "sandboxes")
    vault_url = toml_value(toml, "vault", "url") or ""
    problems = []
    svc = find(docs, "Service", "airlock-vault", "airlock")
    port = svc["spec"]["ports"][0]["port"]
    if vault_url != f"http://airlock-vault.airlock.svc.cluster.local:{port}":
        problems.append(f"sidecar [vault] url {vault_url} is not the vault Service")
    if "service-token" not in secret_data(vault_secret) or "service-token" not in secret_data(sidecar_secret):
        problems.append("service-token missing from a Secret")
    dep = find(docs, "Deployment", "airlock-vault", "airlock")
    venv = env_list(container(pod_spec(dep), "vault"))
    ref = (venv.get("AIRLOCK__VAULT__DATABASE_URL", {}).get("valueFrom") or {}).get("secretKeyRef")
    vault_cm = find(docs, "ConfigMap", "airlock-vault", "airlock")
    db = toml_value(vault_cm["data"]["airlock.toml"], "vault", "database_url") or ""
    if ref:
        db = secret_data(find(docs, "Secret", ref["name"], "airlock")).get(ref["key"], "")
    if not db.startswith("postgres://") or "airlock-postgres" not in db:
        problems.append("the vault's database_url is not the airlock-postgres Service")
    if dep["spec"].get("replicas", 1) > 1 and not db.startswith("postgres"):
        problems.append("several vault replicas without a shared database")
    R.check("k8s vault: sidecars reach it, it reaches PostgreSQL", problems, vault_url)

    if have("kubeconform"):
        p = run_tool(["kubeconform", "-strict", "-summary", *map(str, sorted(K8S.glob("*.yaml")))])
        R.check("kubeconform -strict deploy/k8s", [] if p.returncode == 0 else [tool_output(p)])
    elif have("kubernetes-validate"):
        p = run_tool(["kubernetes-validate", "--strict", "--quiet", *map(str, sorted(K8S.glob("*.yaml")))])
        R.check(
            "kubernetes-validate --strict deploy/k8s (OpenAPI schemas)",
            [] if p.returncode == 0 else [tool_output(p)],
        )
    else:
        R.skip(
            "k8s schema validation",
            "neither kubeconform nor kubernetes-validate installed (pip install kubernetes-validate)",
        )
    return docs


# --- compose ----------------------------------------------------------------


def interpolate(value, env):
    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        v = env.get(name)
        if op == ":?" and not v:
            raise ValueError(f"{name} must be set: {arg}")
        if op == ":-" and not v:
            return arg
        return v or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[?-])([^}]*))?\}", sub, value)


def compose_env(service, env):
    e = service.get("environment", {}) or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: interpolate(str(v), env) for k, v in e.items()}


def check_compose():
    path = DEPLOY / "docker-compose.yml"
    compose = yaml.safe_load(path.read_text())
    services, networks = compose["services"], compose.get("networks", {})
    problems = []
    sandbox, airlock = services["sandbox"], services["airlock"]
    internal = {n for n, v in networks.items() if (v or {}).get("internal")}
    if not set(sandbox.get("networks", [])) or set(sandbox.get("networks", [])) - internal:
        problems.append("the sandbox is on a network that is not internal")
    anets = set(airlock.get("networks", []))
    if not anets & set(sandbox.get("networks", [])):
        problems.append("airlock shares no network with the sandbox")
    if not anets - internal:
        problems.append("airlock has no network with a route out")
    if sandbox.get("ports"):
        problems.append("the sandbox publishes ports")
    # The sandbox's environment is what `airlock env` prints (a file named by
    # SANDBOX_ENV_FILE); unset, a file that sets nothing (no proxy, no way out).
    aenv = compose_env(airlock, {})
    port = aenv.get("AIRLOCK_LISTEN", "").rpartition(":")[2]
    if compose_env(sandbox, {}):
        problems.append("the sandbox's environment: is set in compose, not from airlock's printed environment")
    env_files = sandbox.get("env_file") or []
    env_files = [env_files] if isinstance(env_files, str) else env_files
    if len(env_files) != 1 or "${SANDBOX_ENV_FILE" not in env_files[0]:
        problems.append("the sandbox's env_file is not ${SANDBOX_ENV_FILE…}")
    else:
        default = (path.parent / interpolate(env_files[0], {})).resolve()
        if not default.is_file():
            problems.append(f"the sandbox's default env_file {default} does not exist")
        elif any(line.strip() and not line.strip().startswith("#") for line in default.read_text().splitlines()):
            problems.append(f"the sandbox's default env_file {default} sets variables")
    config_src = None
    for v in airlock.get("volumes", []):
        src, _, dst = v.partition(":")
        if dst.split(":")[0] == "/etc/airlock/airlock.toml":
            config_src = (path.parent / src).resolve()
    if not config_src or not config_src.exists():
        problems.append("airlock's config mount has no source file")
    elif toml_value(config_src.read_text(), "proxy", "public_url") != f"http://airlock:{port}":
        problems.append(f"[proxy] public_url is not http://airlock:{port} (the service and its port)")
    ca_vol = [v for v in sandbox.get("volumes", []) if v.startswith("airlock-ca:")]
    if not ca_vol or not ca_vol[0].endswith(":ro"):
        problems.append("the sandbox does not mount the CA volume read-only")
    if any(v.startswith("airlock-data:") for v in sandbox.get("volumes", [])):
        problems.append("the sandbox mounts airlock's data volume")
    for ports in airlock.get("ports", []):
        if not str(ports).startswith("127.0.0.1:"):
            problems.append(f"airlock publishes {ports} beyond the host's loopback")
    R.check("compose: the sandbox's only way out is airlock", problems, f"networks {sorted(anets)}")

    cmd = None
    env = dict(os.environ)
    if have("docker") and run_tool(["docker", "compose", "version"]).returncode == 0:
        cmd = ["docker", "compose", "-f", str(path), "config", "--quiet"]
    elif have("docker-compose"):
        cmd = ["docker-compose", "-f", str(path), "config", "--quiet"]
    if cmd:
        p = run_tool(cmd, env=env)
        R.check(f"{' '.join(cmd[:2]) if cmd[0] == 'docker' else cmd[0]} config", [] if p.returncode == 0 else [tool_output(p)])
        # With container-e2e's GitHub stand-in added, as the test runs it.
        override = DEPLOY / "e2e" / "fake-github.yml"
        e2e_env = dict(env, AIRLOCK_E2E_DIR=str(DEPLOY / "e2e"), AIRLOCK_E2E_SUBNET="10.231.77.0/24")
        p = run_tool(cmd[:-2] + ["-f", str(override), "config", "--quiet"], env=e2e_env)
        R.check(f"{' '.join(cmd[:2]) if cmd[0] == 'docker' else cmd[0]} config (+ e2e/fake-github.yml)",
                [] if p.returncode == 0 else [tool_output(p)])
    else:
        R.skip("docker compose config", "no docker compose plugin nor docker-compose installed")


# --- systemd ----------------------------------------------------------------


def unit_directives(path):
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith(("#", ";", "[")) and "=" in s:
            k, _, v = s.partition("=")
            out.append((k.strip(), v.strip()))
    return out


def check_systemd(airlock_bin):
    path = DEPLOY / "systemd" / "airlock.service"
    d = unit_directives(path)
    keys = {k: v for k, v in d}
    problems = []
    wanted = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "airlock",
        "CapabilityBoundingSet": "",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for k, v in wanted.items():
        if keys.get(k) != v:
            problems.append(f"{k}={keys.get(k)} (want {v or 'empty'})")
    if not (keys.get("DynamicUser") == "yes" or keys.get("User") not in (None, "", "root")):
        problems.append("runs as root")
    start = shlex.split(keys.get("ExecStart", ""))
    if start[1:2] != ["up"] or "--data-dir" not in start:
        problems.append(f"ExecStart {start} is not `airlock up … --data-dir …`")
    elif start[start.index("--data-dir") + 1] != f"/var/lib/{keys.get('StateDirectory')}":
        problems.append("--data-dir is not the StateDirectory")
    sysusers = (DEPLOY / "systemd" / "airlock.sysusers").read_text()
    if keys.get("User") and not re.search(rf"^u\s+{re.escape(keys['User'])}\s", sysusers, re.M):
        problems.append(f"User={keys['User']} is not created by airlock.sysusers")
    R.check("systemd unit: hardening and ExecStart", problems, keys.get("ExecStart", ""))
    if have("systemd-analyze"):
        with tempfile.TemporaryDirectory() as tmp:
            unit = Path(tmp) / "airlock.service"
            unit.write_text(path.read_text().replace(start[0], str(airlock_bin)))
            p = run_tool(["systemd-analyze", "verify", str(unit)])
            out = "\n".join(
                line
                for line in tool_output(p).splitlines()
                # Nothing the unit says: this machine's own units, or no systemd running.
                if str(unit) in line or "airlock.service" in line
            )
            R.check("systemd-analyze verify", [out] if p.returncode != 0 or out else [])
    else:
        R.skip("systemd-analyze verify", "systemd-analyze not installed")


# --- configs ----------------------------------------------------------------


def config_check(airlock_bin, name, text, env=None, files=None):
    with tempfile.TemporaryDirectory() as tmp:
        for container_path, content in (files or {}).items():
            local = Path(tmp) / container_path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(content)
            text = text.replace(container_path, str(local))
        cfg = Path(tmp) / "airlock.toml"
        cfg.write_text(text)
        p = run_tool(
            [str(airlock_bin), "config", "check", "--config", str(cfg)],
            env={**os.environ, **(env or {})},
        )
        R.check(f"airlock config check: {name}", [] if p.returncode == 0 else [tool_output(p)], p.stdout.strip().split(": ", 1)[-1])


def check_configs(airlock_bin, docs):
    config_check(airlock_bin, "deploy/airlock.default.toml", (DEPLOY / "airlock.default.toml").read_text())
    config_check(
        airlock_bin,
        "deploy/airlock.example.toml",
        (DEPLOY / "airlock.example.toml").read_text(),
    )
    if docs:
        cm = find(docs, "ConfigMap", "airlock-sidecar")
        config_check(
            airlock_bin,
            "deploy/k8s/configmap.yaml airlock.toml",
            cm["data"]["airlock.toml"],
            files={"/run/secrets/airlock/github-token": "ghp_deploy_check\n"},
        )
        vs = secret_data(find(docs, "Secret", "airlock-vault"))
        config_check(
            airlock_bin,
            "deploy/k8s/vault.yaml airlock.toml with AIRLOCK__VAULT__DATABASE_URL",
            find(docs, "ConfigMap", "airlock-vault")["data"]["airlock.toml"],
            env={"AIRLOCK__VAULT__DATABASE_URL": vs["database-url"]},
        )


# --- plain processes --------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Box:
    """A temp dir standing in for a container's filesystem and network."""

    def __init__(self, airlock_bin, name):
        self.dir = Path(tempfile.mkdtemp(prefix=f"airlock-deploy-{name}-"))
        self.bin_dir = self.dir / "bin"
        self.bin_dir.mkdir()
        (self.bin_dir / "airlock").symlink_to(Path(airlock_bin).resolve())
        self.paths = {}
        self.ports = {}
        self.procs = []

    def map_path(self, container_path, local=None):
        local = Path(local) if local else self.dir / container_path.strip("/").replace("/", "_")
        self.paths[container_path] = str(local)
        return local

    def port(self, container_port):
        return self.ports.setdefault(str(container_port), free_port())

    def localize(self, s):
        """Container paths to temp paths, container ports to loopback ports."""
        for cpath in sorted(self.paths, key=len, reverse=True):
            s = re.sub(re.escape(cpath) + r"(?=$|[/\s\"'])", self.paths[cpath], s)

        def port(m):
            p = m.group(2)
            return f"127.0.0.1:{self.port(p)}" if p in self.ports else m.group(0)

        return re.sub(r"\b(0\.0\.0\.0|127\.0\.0\.1):(\d+)\b", port, s)

    def env(self, extra):
        env = {
            "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.dir),
            "AIRLOCK_LOG": "info",
            # The metrics endpoint's default, 127.0.0.1:9090, may be taken here.
            "AIRLOCK_ADMIN_LISTEN": f"127.0.0.1:{self.port('9090')}",
        }
        env.update({k: self.localize(v) for k, v in extra.items()})
        return env

    def run(self, argv, env, timeout=60):
        return subprocess.run(
            [self.localize(a) for a in argv],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )

    def start(self, name, argv, env):
        log = open(self.dir / f"{name}.log", "w")
        proc = subprocess.Popen(
            [self.localize(a) for a in argv],
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=self.dir,
            start_new_session=True,
        )
        proc.log_path = self.dir / f"{name}.log"
        proc.printed = []
        proc.printed_done = threading.Event()

        def read():
            for line in proc.stdout:
                if not line.strip():
                    break
                proc.printed.append(line.rstrip("\n"))
            proc.printed_done.set()

        threading.Thread(target=read, daemon=True).start()
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def log_of(proc):
    try:
        return proc.log_path.read_text()[-1500:]
    except OSError:
        return ""


def http_status(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def wait_http(proc, url, deadline=30):
    end = time.time() + deadline
    last = None
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {url} answered: {log_of(proc)}")
        try:
            status, _, _ = http_status(url)
            if status == 200:
                return
            last = status
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {deadline}s (last: {last}): {log_of(proc)}")


def wait_tcp(proc, port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log_of(proc)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened: {log_of(proc)}")


def stop(proc):
    """SIGTERM, as docker stop, kubelet and systemd send it: airlock must log
    that it is shutting down and exit 0."""
    # airlock installs its SIGTERM handler just after its listeners start
    # serving; a signal in that first instant would end it the default way.
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("did not stop within 15s of SIGTERM")
    if code != 0:
        raise RuntimeError(f"exited {code} after SIGTERM: {log_of(proc)}")
    if "shutting down" not in log_of(proc):
        raise RuntimeError(f"exited without logging that it was shutting down: {log_of(proc)}")


def printed_env(proc):
    if not proc.printed_done.wait(30):
        raise RuntimeError("airlock up printed no environment")
    env = {}
    for line in proc.printed:
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            env[k] = v.strip("'")
    return env


def runs(name):
    """Decorator: a plain-process check; an exception is its failure."""

    def wrap(fn):
        def inner(*args):
            try:
                detail = fn(*args)
                R.ok(name, detail or "")
            except Exception as e:  # noqa: BLE001
                R.fail(name, str(e).strip().replace("\n", " | ")[:3000])

        return inner

    return wrap


@runs("run: the image's ENTRYPOINT + CMD, default config (HEALTHCHECK, SIGTERM)")
def run_image(airlock_bin):
    final = parse_dockerfile(DEPLOY / "Dockerfile")[-1]
    argv = exec_form(stage_values(final, "ENTRYPOINT")[-1], "ENTRYPOINT") + exec_form(
        stage_values(final, "CMD")[-1], "CMD"
    )
    box = Box(airlock_bin, "image")
    try:
        box.map_path("/etc/airlock/airlock.toml", DEPLOY / "airlock.default.toml")
        box.map_path("/var/lib/airlock")
        env = dockerfile_env(final)
        for v in env.values():
            for m in re.finditer(r":(\d+)$", v):
                box.port(m.group(1))
        proc = box.start("airlock", argv, env)
        printed = printed_env(proc)
        vault = box.port("8090")
        wait_http(proc, f"http://127.0.0.1:{vault}/healthz")
        hc = box.run(healthcheck_cmd(final), {}, timeout=10)
        if hc.returncode != 0:
            raise RuntimeError(f"HEALTHCHECK exited {hc.returncode}: {hc.stderr}")
        metrics = box.port("9090")
        wait_http(proc, f"http://127.0.0.1:{metrics}/healthz")
        status, _, body = http_status(f"http://127.0.0.1:{metrics}/metrics")
        if status != 200 or "airlock_requests" not in body:
            raise RuntimeError(f"/metrics answered {status} without airlock_requests")
        for var in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"):
            if not Path(printed.get(var, "/nonexistent")).is_file():
                raise RuntimeError(f"{var} names no file: {printed.get(var)}")
        stop(proc)
        return f"{' '.join(argv)}; vault /healthz, HEALTHCHECK, /metrics ok; HTTPS_PROXY={printed.get('HTTPS_PROXY')}"
    finally:
        box.close()


def run_ca_init(box, argv, ca_dir):
    p = box.run(argv, {}, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"CA init exited {p.returncode}: {p.stderr.strip()}")
    files = sorted(x.name for x in Path(ca_dir).iterdir())
    if files != ["ca-bundle.pem", "ca.pem"]:
        raise RuntimeError(f"the CA volume holds {files}, expected ca-bundle.pem and ca.pem only")
    return files


@runs("run: compose's airlock-ca and airlock services, sandbox environment agrees")
def run_compose(airlock_bin):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svc = compose["services"]
    final = parse_dockerfile(DEPLOY / "Dockerfile")[-1]
    box = Box(airlock_bin, "compose")
    try:
        data = box.map_path("/var/lib/airlock")
        ca = box.map_path("/var/lib/airlock-ca")
        data.mkdir()
        ca.mkdir()
        ca_svc = svc["airlock-ca"]
        run_ca_init(box, list(ca_svc["entrypoint"]) + list(ca_svc["command"]), ca)

        a = svc["airlock"]
        for v in a["volumes"]:
            src, _, rest = v.partition(":")
            dst = rest.split(":")[0]
            if src.startswith("."):
                box.map_path(dst, (DEPLOY / src).resolve())
        env = dockerfile_env(final)
        env.update(compose_env(a, {}))
        for v in env.values():
            for m in re.finditer(r":(\d+)$", v):
                box.port(m.group(1))
        argv = exec_form(stage_values(final, "ENTRYPOINT")[-1], "ENTRYPOINT") + list(a["command"])
        proc = box.start("airlock", argv, env)
        printed = printed_env(proc)
        wait_http(proc, f"http://127.0.0.1:{box.port('8090')}/healthz")
        # The sandbox's environment is this printed one (SANDBOX_ENV_FILE): its
        # proxy is the airlock service, and its CA variables name files of
        # airlock's data dir that the sandbox has from the CA volume, mounted
        # where the data dir is in airlock's container.
        port = env["AIRLOCK_LISTEN"].rpartition(":")[2]
        if printed.get("HTTPS_PROXY") != f"http://airlock:{port}":
            raise RuntimeError(f"airlock prints HTTPS_PROXY={printed.get('HTTPS_PROXY')}, not http://airlock:{port}")
        data_dir = a["command"][a["command"].index("--data-dir") + 1]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["sandbox"].get("volumes", [])}
        if mounts.get(data_dir) != "airlock-ca":
            raise RuntimeError(f"the sandbox does not mount the CA volume at {data_dir}, where the printed variables point")
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS"):
            local = Path(printed.get(var, ""))
            if local.parent != data or not (ca / local.name).is_file():
                raise RuntimeError(f"airlock prints {var}={printed.get(var)}, which is not a file of the CA volume")
        # The sandbox's CA volume holds the CA airlock serves with.
        if (ca / "ca.pem").read_text() != (data / "ca.pem").read_text():
            raise RuntimeError("the CA volume's ca.pem is not airlock's CA")
        stop(proc)
        return f"HTTPS_PROXY={printed['HTTPS_PROXY']}, CA variables name the CA volume at {data_dir}"
    finally:
        box.close()


def k8s_env(c, secret_values):
    env = {}
    for e in c.get("env", []) or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret_values[ref["key"]]
    return env


@runs("run: k8s vault Deployment and sandbox pod (init containers, sidecar, probe)")
def run_k8s(airlock_bin):
    docs = k8s_docs()
    values = {
        "master-key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "admin-token": secrets.token_urlsafe(32),
        "service-token": secrets.token_urlsafe(32),
        "github-token": "ghp_deploy_check",
    }
    vbox = Box(airlock_bin, "vault")
    pbox = Box(airlock_bin, "pod")
    try:
        # The vault, with SQLite standing in for PostgreSQL unless told otherwise.
        dep = find(docs, "Deployment", "airlock-vault")
        vspec = pod_spec(dep)
        vc = container(vspec, "vault")
        values["database-url"] = (
            os.environ.get("DEPLOY_CHECK_DATABASE_URL") or f"sqlite://{vbox.dir}/vault.db?mode=rwc"
        )
        cfg_path = vbox.dir / "vault.toml"
        cfg_path.write_text(find(docs, "ConfigMap", "airlock-vault")["data"]["airlock.toml"])
        mount = next(m for m in vc["volumeMounts"] if m["name"] == "config")["mountPath"]
        vbox.map_path(f"{mount}/airlock.toml", cfg_path)
        vbox.map_path("/var/lib/airlock")
        vbox.port("8090")
        venv = k8s_env(vc, values)
        refused = vbox.run(["airlock", *vc["args"]], {**venv, "AIRLOCK_MASTER_KEY": "CHANGE-ME"}, 30)
        if refused.returncode == 0 or "AIRLOCK_MASTER_KEY" not in refused.stderr:
            raise RuntimeError("the vault started with the shipped CHANGE-ME master key")
        vault = vbox.start("vault", ["airlock", *vc["args"]], venv)
        vport = vbox.port("8090")
        for probe in ("livenessProbe", "readinessProbe"):
            wait_http(vault, f"http://127.0.0.1:{vport}{vc[probe]['httpGet']['path']}")
        if not os.environ.get("DEPLOY_CHECK_DATABASE_URL") and not (vbox.dir / "vault.db").exists():
            raise RuntimeError("the vault did not open the database its environment names")

        # The sandbox pod: init containers in order, then the sidecar.
        pod = find(docs, "Pod", "sandbox")
        spec = pod_spec(pod)
        cm = find(docs, "ConfigMap", "airlock-sidecar")
        sidecar = container(spec, "airlock")
        mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
        sidecar_cfg = cm["data"]["airlock.toml"].replace(
            "http://airlock-vault.airlock.svc.cluster.local:8090", f"http://127.0.0.1:{vport}"
        )
        pbox.map_path(f"{mounts['airlock-config']}/airlock.toml", pbox.dir / "sidecar.toml")
        secrets_dir = pbox.map_path(mounts["airlock-secrets"])
        secrets_dir.mkdir()
        (secrets_dir / "github-token").write_text(values["github-token"] + "\n")
        (pbox.dir / "sidecar.toml").write_text(pbox.localize(sidecar_cfg))
        data = pbox.map_path(mounts["airlock-data"])
        data.mkdir()
        ca_init = container(spec, "airlock-ca")
        ca_mount = next(m for m in ca_init["volumeMounts"] if m["name"] == "airlock-ca")["mountPath"]
        ca = pbox.map_path(ca_mount)
        ca.mkdir()
        run_ca_init(pbox, list(ca_init["command"]) + list(ca_init["args"]), ca)
        senv = k8s_env(sidecar, {"service-token": values["service-token"]})
        port = senv["AIRLOCK_LISTEN"].rpartition(":")[2]
        pbox.port(port)
        admin = senv["AIRLOCK_ADMIN_LISTEN"].rpartition(":")[2]
        pbox.port(admin)
        proc = pbox.start("sidecar", ["airlock", *sidecar["args"]], senv)
        wait_tcp(proc, pbox.port(port))
        named = {p["name"]: p["containerPort"] for p in sidecar.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe"):
            get = sidecar[probe]["httpGet"]
            probe_port = named.get(get["port"], get["port"])
            if str(probe_port) != admin:
                raise RuntimeError(f"{probe} asks port {probe_port}, not the metrics endpoint {admin}")
            wait_http(proc, f"http://127.0.0.1:{pbox.port(probe_port)}{get['path']}")
        # The proxy serves, and its egress guard refuses a private destination.
        # (Port 80: an allowed port, so the refusal is the guard's, not the port list's.)
        status, headers, _ = http_status_via_proxy(pbox.port(port), "http://127.0.0.1:80/")
        if status != 403 or headers.get("x-airlock-error") != "egress_denied":
            raise RuntimeError(f"proxy answered {status} {headers.get('x-airlock-error')} for a loopback target")
        stop(proc)
        stop(vault)
        return f"vault /healthz+/readyz on {vport}, sidecar on {pbox.port(port)}, CA in {ca_mount}"
    finally:
        pbox.close()
        vbox.close()


def http_status_via_proxy(proxy_port, url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy_port}"}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@runs("run: the systemd unit's ExecStart with its Environment=")
def run_systemd(airlock_bin):
    path = DEPLOY / "systemd" / "airlock.service"
    d = unit_directives(path)
    keys = dict(d)
    argv = shlex.split(keys["ExecStart"])
    env = {}
    for k, v in d:
        if k == "Environment":
            for token in shlex.split(v):
                name, _, value = token.partition("=")
                env[name] = value
    box = Box(airlock_bin, "systemd")
    try:
        box.map_path(argv[0], box.bin_dir / "airlock")
        box.map_path("/etc/airlock/airlock.toml", DEPLOY / "airlock.example.toml")
        box.map_path(f"/var/lib/{keys['StateDirectory']}")
        # What EnvironmentFile= would hold, and the example config's ports.
        env["AIRLOCK_LISTEN"] = f"127.0.0.1:{box.port('8080')}"
        env["AIRLOCK_VAULT_LISTEN"] = f"127.0.0.1:{box.port('8090')}"
        proc = box.start("airlock", argv, env)
        printed_env(proc)
        wait_http(proc, f"http://127.0.0.1:{box.port('8090')}/healthz")
        stop(proc)
        return " ".join(argv)
    finally:
        box.close()


@runs("run: egress-lock in a network namespace: the sandbox's uid reaches loopback only")
def run_egress_lock(_airlock_bin):
    """The pod's network namespace is a fresh netns, the world outside it a
    second one joined by a veth pair, both made here and removed after."""
    docs = k8s_docs()
    spec = pod_spec(find(docs, "Pod", "sandbox"))
    script = container(spec, "egress-lock")["args"][0]
    sidecar_uid = container(spec, "airlock")["securityContext"]["runAsUser"]
    sandbox_uid = container(spec, "sandbox")["securityContext"]["runAsUser"]
    tag = f"alck{os.getpid() % 100000}"
    pod, world = f"{tag}-pod", f"{tag}-world"
    pod_ip, world_ip = "10.213.77.1", "10.213.77.2"

    def ip(*args, check=True):
        p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
        return p

    listeners = []
    try:
        ip("netns", "add", pod)
        ip("netns", "add", world)
        ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        ip("link", "set", f"{tag}a", "netns", pod)
        ip("link", "set", f"{tag}b", "netns", world)
        for ns, dev, addr in ((pod, f"{tag}a", pod_ip), (world, f"{tag}b", world_ip)):
            ip("netns", "exec", ns, "ip", "addr", "add", f"{addr}/30", "dev", dev)
            ip("netns", "exec", ns, "ip", "link", "set", dev, "up")
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        serve = "import socket,sys\ns=socket.create_server((sys.argv[1],int(sys.argv[2])))\nwhile True: s.accept()[0].close()"
        for ns, addr in ((world, world_ip), (pod, "127.0.0.1")):
            listeners.append(
                subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", serve, addr, "8443"])
            )
        locked = subprocess.run(
            ["ip", "netns", "exec", pod, "sh", "-c", script], capture_output=True, text=True, timeout=30
        )
        if locked.returncode != 0:
            raise RuntimeError(f"the egress-lock script failed: {locked.stderr.strip()}")
        time.sleep(0.3)
        probe = "import socket,sys\ntry:\n socket.create_connection((sys.argv[1],8443),timeout=3).close(); print('open')\nexcept OSError as e: print(type(e).__name__)"

        def connect(uid, addr):
            p = subprocess.run(
                ["ip", "netns", "exec", pod, "setpriv", f"--reuid={uid}", f"--regid={uid}",
                 "--clear-groups", "python3", "-c", probe, addr],
                capture_output=True, text=True, timeout=30,
            )
            return p.stdout.strip() or p.stderr.strip()

        got = {
            "sidecar out": connect(sidecar_uid, world_ip),
            "sandbox out": connect(sandbox_uid, world_ip),
            "sandbox loopback": connect(sandbox_uid, "127.0.0.1"),
        }
        want = {"sidecar out": "open", "sandbox out": "ConnectionRefusedError", "sandbox loopback": "open"}
        if got != want:
            raise RuntimeError(f"expected {want}, got {got}")
        return f"uid {sidecar_uid} out: open; uid {sandbox_uid} out: refused, to loopback: open"
    finally:
        for p in listeners:
            p.kill()
            p.wait()
        ip("netns", "del", pod, check=False)
        ip("netns", "del", world, check=False)


def egress_lock_runnable():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables", "ip6tables", "setpriv"):
        if not have(tool):
            return f"{tool} not installed (apt-get install iptables iproute2)"
    return None


# --- shell ------------------------------------------------------------------


def check_shell():
    scripts = [DEPLOY / "check", DEPLOY / "container-e2e", DEPLOY / "docker-engine", DEPLOY / "base-images",
               ROOT / ".ci" / "minbase", ROOT / "bench" / "run", ROOT / "bench" / "pgo", ROOT / "fuzz" / "run-ci",
               *sorted((ROOT / "examples").glob("*.sh"))]
    if have("shellcheck"):
        p = run_tool(["shellcheck", *map(str, scripts)])
        R.check("shellcheck deploy/check, container-e2e, docker-engine, base-images, .ci/minbase, bench/run, bench/pgo, "
                "fuzz/run-ci, examples/*.sh", [] if p.returncode == 0 else [tool_output(p)])
    else:
        problems = []
        for s in scripts:
            p = run_tool(["bash", "-n", str(s)])
            if p.returncode != 0:
                problems.append(tool_output(p))
        R.check("bash -n deploy/ scripts, .ci/minbase, examples/*.sh (shellcheck not installed)", problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--airlock-bin", required=True)
    ap.add_argument("--no-run", action="store_true", help="skip the plain-process runs")
    args = ap.parse_args()
    airlock_bin = Path(args.airlock_bin).resolve()

    check_yaml_parses()
    check_dockerfile()
    docs = check_k8s()
    check_compose()
    check_systemd(airlock_bin)
    check_configs(airlock_bin, docs)
    check_shell()
    if args.no_run:
        R.skip("plain-process runs", "--no-run")
    else:
        run_image(airlock_bin)
        run_compose(airlock_bin)
        run_k8s(airlock_bin)
        run_systemd(airlock_bin)
        why_not = egress_lock_runnable()
        if why_not:
            R.skip("run: egress-lock in a network namespace", why_not)
        else:
            run_egress_lock(airlock_bin)

    total = R.passed + len(R.failed)
    if R.failed:
        print(f"\ndeploy/check: {len(R.failed)} of {total} checks FAILED ({R.skipped} skipped):")
        for name in R.failed:
            print(f"  - {name}")
        return 1
    print(f"\ndeploy/check: all {total} checks passed ({R.skipped} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
