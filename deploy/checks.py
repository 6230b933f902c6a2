"""Structural checks of the deployment artifacts, run by deploy/check.

Usage: python deploy/checks.py SECTION [ARGS]; SECTION is one of yaml, kubernetes,
compose, dockerfile, systemd, monitoring. Prints one line per check, `ok   …` or `FAIL …` (with
the reason on the following indented lines), and exits 1 if any check failed.
`health`, `unauthenticated` and `metrics` probe a running node instead (deploy/check's
smoke test): they print only what is wrong, and exit 1 then. `grafana-queries FILE`
writes every query of the dashboards as a Prometheus rules file, for promtool to parse.
Needs PyYAML, grpcio and grpcio-health-checking (target/tools/venv, installed by
scripts/install-tools).
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
failed = 0


def report(name, problems):
    """One line for a check; its problems (a list of strings) make it fail."""
    global failed
    if problems:
        failed += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"       {p}")
    else:
        print(f"ok   {name}")


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def rel(path):
    return Path(path).resolve().relative_to(DEPLOY.parent)


# === yaml ===


def check_yaml():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    files = [p for p in files if "secrets" not in p.relative_to(DEPLOY).parts]
    if not files:
        report("YAML files under deploy/", ["none found"])
    for p in files:
        try:
            docs = load_all(p)
            report(f"YAML parses: {rel(p)} ({len(docs)} documents)", [] if docs else ["empty"])
        except yaml.YAMLError as e:
            report(f"YAML parses: {rel(p)}", [str(e)])


# === kubernetes ===

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def pod_spec(doc):
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def container_hardening(pod, c):
    problems = []
    psc = pod.get("securityContext", {}) or {}
    sc = c.get("securityContext", {}) or {}
    name = c.get("name", "?")

    def eff(key):
        return sc.get(key, psc.get(key))

    if eff("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot is not true")
    if eff("runAsUser") == 0:
        problems.append(f"{name}: runAsUser is 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{name}: capabilities.drop lacks ALL")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    if sc.get("privileged"):
        problems.append(f"{name}: privileged")
    res = c.get("resources") or {}
    if not (res.get("requests") and (res.get("limits") or {}).get("memory")):
        problems.append(f"{name}: resources need requests and a memory limit")
    for probe in ("livenessProbe", "readinessProbe"):
        if probe not in c:
            problems.append(f"{name}: no {probe}")
    return problems


HEALTH_PORT = 7712
TLS_PORTS = {7710: "the federation listener", 7711: "the client API"}


def listen_port(addr):
    """The port of a `host:port` listen address (None if unset or malformed)."""
    try:
        return int(str(addr).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def node_probe_problems(c, health_port):
    """All three probes must be the kubelet's native gRPC probes on the plaintext
    health listener (api.health_listen). The client API and the federation listener
    are TLS in a pod; the kubelet's gRPC probes speak no TLS, so a gRPC probe there can
    never pass."""
    problems = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            problems.append(f"no {kind}")
            continue
        if "grpc" not in probe:
            other = next((k for k in ("tcpSocket", "exec", "httpGet") if k in probe), "no handler")
            problems.append(f"{kind}: {other}, expected a grpc probe on the health listener {health_port}")
            continue
        g = probe["grpc"]
        port = g.get("port")
        if port in TLS_PORTS:
            problems.append(f"{kind}: plaintext grpc probe on {port}, {TLS_PORTS[port]}, which is TLS")
        elif port != health_port:
            problems.append(f"{kind}: grpc probe on {port}, not the health listener {health_port}")
        if g.get("mode"):
            problems.append(f"{kind}: grpc probe with mode {g['mode']} against the plaintext health listener")
    return problems


def secret_names(volume):
    """The Secrets a volume is made of (a secret volume, or a projected one)."""
    if "secret" in volume:
        return [volume["secret"].get("secretName")]
    return [s["secret"].get("name") for s in (volume.get("projected") or {}).get("sources", []) if "secret" in s]


def replica_problems(node, c, mounts, volumes, node_cfg, budgets):
    """Replicas of one node must share the identity directory's contents, the master
    key's generations (the key directory, which they write: rotation), the
    configuration (org.id) and the PostgreSQL database. A per-pod volume for the
    identity is right for one replica only."""
    problems = []
    replicas = node["spec"].get("replicas", 1)
    claims = {t["metadata"]["name"] for t in node["spec"].get("volumeClaimTemplates", [])}
    data_name = mounts.get("/var/lib/exitnet", {}).get("name")
    data = volumes.get(data_name, {})
    ident_mount = mounts.get("/var/lib/exitnet/identity")
    if ident_mount is not None:
        ident = volumes.get(ident_mount["name"], {})
        if secret_names(ident):
            if not ident_mount.get("readOnly"):
                problems.append("the identity Secret is not mounted readOnly")
        elif "persistentVolumeClaim" not in ident:
            problems.append("data_dir/identity is neither a Secret nor a shared PersistentVolumeClaim")
    elif "emptyDir" in data:
        problems.append("data_dir/identity would be created anew in an emptyDir at every start")
    elif replicas > 1 and "persistentVolumeClaim" not in data:
        problems.append(f"{replicas} replicas, but each would create its own identity in its data directory "
                        "(mount the identity from a Secret at /var/lib/exitnet/identity)")
    elif replicas == 1 and data_name not in claims and "persistentVolumeClaim" not in data:
        problems.append("the data directory holding the identity is not on a PersistentVolumeClaim")
    kd = (node_cfg.get("keys") or {}).get("dir")
    # The mount holding keys.dir (it may be a subdirectory of the volume).
    kd_path = kd.rstrip("/") if kd else ""
    kd_mount = next((m for path, m in sorted(mounts.items(), key=lambda pm: -len(pm[0]))
                     if kd and (kd_path == path.rstrip("/") or kd_path.startswith(path.rstrip("/") + "/"))), None)
    if kd_mount is not None and kd_mount.get("mountPath", "").rstrip("/") in ("/var/lib/exitnet", ""):
        kd_mount = None
    data_dir = node_cfg.get("data_dir", "/var/lib/exitnet").rstrip("/")
    if not kd:
        problems.append("keys.dir is unset in exitnet.toml (the key directory replicas share)")
    elif kd.rstrip("/") == data_dir or kd.startswith(data_dir + "/"):
        problems.append(f"keys.dir {kd} is inside the data directory")
    elif kd_mount is None:
        problems.append(f"keys.dir {kd} is not on a volume of its own")
    else:
        claim = volumes.get(kd_mount["name"], {}).get("persistentVolumeClaim")
        if not claim:
            problems.append(f"keys.dir {kd} is not on a PersistentVolumeClaim (the node writes new generations)")
        elif kd_mount.get("readOnly"):
            problems.append(f"keys.dir {kd} is mounted readOnly (rotation writes to it)")
    if node_cfg.get("master_key_file") or node_cfg.get("master_key"):
        problems.append("master_key_file is set: a master key outside the key directory is never destroyed")
    if not (node_cfg.get("org") or {}).get("id"):
        problems.append("org.id is not set in exitnet.toml")
    if replicas > 1:
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("EXITNET_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            problems.append("replicas need PostgreSQL: EXITNET_DATABASE_URL from a Secret")
        elif ref.get("optional"):
            problems.append("EXITNET_DATABASE_URL is optional: a pod without it would run on a SQLite database of its own")
        labels = pod_labels(node)
        if not any(all(labels.get(k) == v for k, v in (b["spec"].get("selector", {}).get("matchLabels") or {}).items())
                   for b in budgets):
            problems.append("no PodDisruptionBudget selects the replicas")
    return problems


def pod_labels(workload):
    return ((workload.get("spec", {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def check_kubernetes(rendered=None):
    kdir = DEPLOY / "kubernetes"
    files = sorted(kdir.glob("*.yaml"))
    docs = []
    for p in files:
        file_docs = load_all(p)
        problems = [
            f"document {i}: no apiVersion or kind"
            for i, d in enumerate(file_docs)
            if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind"))
        ]
        report(f"kubernetes: apiVersion and kind in {rel(p)}", problems)
        docs += [(p, d) for d in file_docs if isinstance(d, dict)]

    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    problems = [f"missing resource {r}" for r in kust.get("resources", []) if not (kdir / r).exists()]
    for gen in kust.get("configMapGenerator", []):
        problems += [f"missing generator file {f}" for f in gen.get("files", []) if not (kdir / f).exists()]
    if "secret.example.yaml" in kust.get("resources", []):
        problems.append("secret.example.yaml must not be applied (placeholders would overwrite real Secrets)")
    report("kubernetes: kustomization resources and generator files exist", problems)

    objects = [d for _, d in docs] if rendered is None else [
        d for d in load_all(rendered) if isinstance(d, dict)
    ]
    by_kind = {}
    for d in objects:
        by_kind.setdefault(d.get("kind"), []).append(d)

    workloads = [d for d in objects if d.get("kind") in WORKLOADS]
    if not workloads:
        report("kubernetes: workloads present", ["no Deployment or StatefulSet"])
    for w in workloads:
        pod = pod_spec(w)
        problems = []
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            problems += container_hardening(pod, c)
        report(f"kubernetes: {w['kind']} {w['metadata']['name']} runs non-root, read-only, no capabilities, RuntimeDefault seccomp, probes, resources", problems)

    toml_path = kdir / "exitnet.toml"
    with open(toml_path, "rb") as f:
        node_cfg = tomllib.load(f)
    api_cfg = node_cfg.get("api", {})
    health_port = listen_port(api_cfg.get("health_listen"))
    problems = []
    if health_port is None:
        problems.append("api.health_listen is not set (the kubelet's gRPC probes need a plaintext health listener)")
    elif health_port != HEALTH_PORT:
        problems.append(f"api.health_listen is on {health_port}, not {HEALTH_PORT}")
    elif str(api_cfg.get("health_listen")).rsplit(":", 1)[0] in ("127.0.0.1", "[::1]", "localhost"):
        problems.append("api.health_listen is on loopback: the kubelet probes the pod IP")
    if health_port in TLS_PORTS or health_port == listen_port(api_cfg.get("listen")):
        problems.append("api.health_listen shares a port with a TLS listener")
    if listen_port((node_cfg.get("metrics") or {}).get("listen")) != 9711:
        problems.append("metrics.listen is not on 9711")
    report(f"kubernetes: exitnet.toml sets api.health_listen on {HEALTH_PORT} (plaintext, health only) and metrics.listen on 9711", problems)

    node = next((w for w in workloads if w["metadata"]["name"] == "exitnet-node"), None)
    if node is None:
        report("kubernetes: exitnet-node workload", ["not found"])
    else:
        pod = pod_spec(node)
        c = pod["containers"][0]
        report(f"kubernetes: exitnet-node probes are native gRPC probes on the health listener {HEALTH_PORT} from exitnet.toml, none on a TLS port", node_probe_problems(c, health_port or HEALTH_PORT))
        problems = []
        if pod.get("enableServiceLinks") is not False:
            problems.append("enableServiceLinks must be false: service links inject EXITNET_* variables the node rejects")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append("automountServiceAccountToken should be false (the node never calls the Kubernetes API)")
        report("kubernetes: exitnet-node has no service-link variables and no API token", problems)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        args = c.get("args", [])
        problems = []
        for path in ("/var/lib/exitnet", "/etc/exitnet", "/run/secrets", "/tmp"):
            if path not in mounts:
                problems.append(f"no volume at {path}")
        if "--config" not in args or not args[args.index("--config") + 1].startswith("/etc/exitnet/"):
            problems.append("args do not name --config under /etc/exitnet")
        if node_cfg.get("data_dir") != "/var/lib/exitnet":
            problems.append(f"exitnet.toml's data_dir {node_cfg.get('data_dir')} is not the mounted /var/lib/exitnet")
        ports = {p.get("containerPort"): p.get("name") for p in c.get("ports", [])}
        if not {7710, 7711, HEALTH_PORT, 9711} <= set(ports):
            problems.append(f"container ports {sorted(ports)} lack 7710, 7711, {HEALTH_PORT} or 9711")
        elif ports[HEALTH_PORT] != "health":
            problems.append(f"container port {HEALTH_PORT} is not named health")
        report(f"kubernetes: exitnet-node mounts data, config, secrets, /tmp; ports 7710 7711 {HEALTH_PORT} 9711", problems)
        report("kubernetes: exitnet-node replicas share the identity, the key directory (a PersistentVolumeClaim), org.id and PostgreSQL",
               replica_problems(node, c, mounts, volumes, node_cfg, by_kind.get("PodDisruptionBudget", [])))

    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    problems = []
    for name, stype, port in (
        ("exitnet-federation", "LoadBalancer", 7710),
        ("exitnet-api", "ClusterIP", 7711),
        ("exitnet-metrics", "ClusterIP", 9711),
    ):
        s = services.get(name)
        if s is None:
            problems.append(f"no Service {name}")
            continue
        if s["spec"].get("type", "ClusterIP") != stype:
            problems.append(f"{name} is {s['spec'].get('type')}, not {stype}")
        if port not in [p.get("port") for p in s["spec"].get("ports", [])]:
            problems.append(f"{name} does not serve port {port}")
    report("kubernetes: Services federation LoadBalancer 7710, api ClusterIP 7711, metrics ClusterIP 9711", problems)

    policies = {p["metadata"]["name"]: p for p in by_kind.get("NetworkPolicy", [])}
    problems = []
    deny = [p for p in policies.values() if p["spec"].get("podSelector") == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        problems.append("no default-deny NetworkPolicy")
    np = policies.get("exitnet-node")
    if np is None:
        problems.append("no NetworkPolicy exitnet-node")
    else:
        ingress = {}
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                ingress[p.get("port")] = rule.get("from")
        if set(ingress) != {7710, 7711, 9711}:
            problems.append(f"ingress ports {sorted(ingress)} are not exactly 7710, 7711, 9711")
        for port in (7711, 9711):
            peers = ingress.get(port) or []
            if not peers or not all("namespaceSelector" in f for f in peers):
                problems.append(f"ingress on {port} is not limited to a namespace")
        egress = {p.get("port") for rule in np["spec"].get("egress", []) for p in rule.get("ports", [])}
        for port in (53, 5432, 7710, 443):
            if port not in egress:
                problems.append(f"no egress rule for port {port}")
        if any(not rule.get("ports") for rule in np["spec"].get("egress", [])):
            problems.append("an egress rule without ports allows everything")
    pg = policies.get("exitnet-postgres")
    if pg is None:
        problems.append("no NetworkPolicy exitnet-postgres")
    else:
        sources = [f for rule in pg["spec"].get("ingress", []) for f in rule.get("from", [])]
        if not sources or any(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") != "exitnet-node" for f in sources):
            problems.append("PostgreSQL ingress is not limited to the node")
    report("kubernetes: NetworkPolicy default deny; node in 7710 any, 7711 agency, 9711 monitoring; out DNS, PostgreSQL, 7710, 443", problems)

    problems = []
    for p, d in docs:
        if d.get("kind") != "Secret":
            continue
        for key, value in (d.get("stringData") or {}).items():
            if "REPLACE" not in str(value):
                problems.append(f"{rel(p)}: {d['metadata']['name']}/{key} is not a placeholder")
        if d.get("data"):
            problems.append(f"{rel(p)}: {d['metadata']['name']} carries base64 data")
    report("kubernetes: Secrets hold placeholders only", problems)


# === compose ===


def check_compose(secrets_dir=None):
    path = DEPLOY / "compose.yaml"
    compose = yaml.safe_load(path.read_text())
    services = compose.get("services", {})
    declared = compose.get("secrets", {})
    nodes = {n: s for n, s in services.items() if "exitnet" in str(s.get("image", "")) or "build" in s}
    problems = [] if len(nodes) >= 3 else [f"only {len(nodes)} node services"]
    for name, s in nodes.items():
        cmd = s.get("command", [])
        cfg = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
        mounts = {}
        for v in s.get("volumes", []):
            if isinstance(v, str) and v.startswith("./"):
                src, target = v.split(":")[:2]
                mounts[target] = src
        if cfg is None:
            problems.append(f"{name}: no --config in command")
        elif cfg not in mounts:
            problems.append(f"{name}: {cfg} is not mounted")
        elif not (DEPLOY / mounts[cfg]).is_file():
            problems.append(f"{name}: config file {mounts[cfg]} does not exist")
        if not any(isinstance(v, str) and v.endswith(":/var/lib/exitnet") and not v.startswith(".") for v in s.get("volumes", [])):
            problems.append(f"{name}: /var/lib/exitnet is not a named volume")
        if not any(isinstance(v, str) and v.endswith(":/var/lib/exitnet-keys") and not v.startswith(".") for v in s.get("volumes", [])):
            problems.append(f"{name}: /var/lib/exitnet-keys (the key directory) is not a named volume of its own")
        for ref in s.get("secrets", []):
            src = ref["source"] if isinstance(ref, dict) else ref
            if src not in declared:
                problems.append(f"{name}: secret {src} is not declared")
    report("compose: each node mounts an existing config file, a data volume, a key volume, declared secrets", problems)

    problems = []
    for name, s in nodes.items():
        if s.get("read_only") is not True:
            problems.append(f"{name}: read_only is not true")
        if "ALL" not in (s.get("cap_drop") or []):
            problems.append(f"{name}: cap_drop lacks ALL")
        if not any("no-new-privileges" in o for o in s.get("security_opt", [])):
            problems.append(f"{name}: no no-new-privileges")
        if str(s.get("user", "65532")).split(":")[0] in ("0", "root"):
            problems.append(f"{name}: runs as root")
    report("compose: node containers read-only, no capabilities, no new privileges, non-root", problems)

    problems = []
    pg = [n for n, s in services.items() if str(s.get("image", "")).startswith("postgres")]
    if not pg:
        problems.append("no PostgreSQL service")
    for n in pg:
        if services[n].get("ports"):
            problems.append(f"{n}: PostgreSQL is published")
    if not any(isinstance(s.get("depends_on"), dict) and any(d in pg for d in s["depends_on"]) for s in nodes.values()):
        problems.append("no node depends on PostgreSQL")
    report("compose: PostgreSQL service, unpublished, a node depends on it", problems)

    problems = []
    secretish = re.compile(r"PASSWORD|SECRET|MASTER_KEY|DATABASE_URL|TOKEN", re.I)
    for name, s in services.items():
        env = s.get("environment") or {}
        if isinstance(env, dict):
            items = list(env.items())
        else:
            items = [tuple((e.split("=", 1) + [""])[:2]) for e in env]
        for k, v in items:
            if secretish.search(k) and not k.endswith("_FILE") and v not in (None, ""):
                problems.append(f"{name}: {k} has a value in compose.yaml")
    for key, sec in declared.items():
        f = sec.get("file", "")
        if not f.startswith("./secrets/"):
            problems.append(f"secret {key}: {f} is not under ./secrets/ (ignored by git)")
    for name, s in services.items():
        for e in s.get("env_file", []) or []:
            p = e["path"] if isinstance(e, dict) else e
            if not p.startswith("./secrets/"):
                problems.append(f"{name}: env_file {p} is not under ./secrets/")
    ignore = (DEPLOY / ".gitignore").read_text() if (DEPLOY / ".gitignore").exists() else ""
    if "/secrets/" not in ignore:
        problems.append("deploy/.gitignore does not ignore secrets/")
    report("compose: no secret values inline; secret files under deploy/secrets/ (git-ignored)", problems)

    if secrets_dir:
        base = Path(secrets_dir)
        missing = []
        for key, sec in declared.items():
            f = Path(sec["file"]).relative_to("secrets")
            if not (base / f).is_file():
                missing.append(f"secret {key}: make-secrets did not create {f}")
        for name, s in services.items():
            for e in s.get("env_file", []) or []:
                p = Path(e["path"] if isinstance(e, dict) else e).relative_to("secrets")
                if not (base / p).is_file():
                    missing.append(f"{name}: make-secrets did not create {p}")
        report("compose: deploy/make-secrets creates every secret file and env_file compose.yaml names", missing)


# === dockerfile ===


def check_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    problems = []
    if len(froms) < 2:
        problems.append("not multi-stage")
    final = lines[froms[-1]:] if froms else lines
    users = [l.split(None, 1)[1] for l in final if l.upper().startswith("USER ")]
    if not users:
        problems.append("no USER in the final stage")
    elif users[-1].split(":")[0] in ("0", "root"):
        problems.append(f"final USER is {users[-1]}")
    report("Dockerfile: multi-stage, final stage runs as a non-root USER", problems)

    problems = []
    build = " ".join(lines)
    for needle in ("--release", "--locked", "-p exitnet-node", "-p exitnetctl"):
        if needle not in build:
            problems.append(f"cargo build lacks {needle}")
    expose = {p for l in final if l.upper().startswith("EXPOSE ") for p in l.split()[1:]}
    if not {"7710", "7711", "7712", "9711"} <= expose:
        problems.append(f"EXPOSE {sorted(expose)} lacks 7710, 7711, 7712 or 9711")
    if not any(l.upper().startswith("VOLUME") and "/var/lib/exitnet" in l for l in final):
        problems.append("no VOLUME /var/lib/exitnet")
    if not any(l.upper().startswith("HEALTHCHECK") for l in final):
        problems.append("no HEALTHCHECK")
    if re.search(r"\b(curl|wget)\b|ADD\s+https?://", text.split("FROM", 2)[-1]):
        problems.append("the runtime stage downloads something")
    report("Dockerfile: --release --locked both binaries; EXPOSE 7710 7711 7712 9711; VOLUME; HEALTHCHECK", problems)

    ignore = DEPLOY.parent / ".dockerignore"
    entries = ignore.read_text().split() if ignore.exists() else []
    problems = [] if ignore.exists() else [".dockerignore missing"]
    for e in ("target/", "**/node_modules/", ".git/", "deploy/secrets/"):
        if e not in entries:
            problems.append(f".dockerignore lacks {e}")
    report(".dockerignore excludes target/, node_modules, .git, deploy/secrets/", problems)


# === systemd ===


def check_systemd():
    unit = (DEPLOY / "systemd" / "exitnet-node.service").read_text()
    directives = {}
    for line in unit.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            directives.setdefault(k, []).append(v)
    want = {
        "DynamicUser": "yes",
        "StateDirectory": "exitnet exitnet-keys",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "RestrictNamespaces": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "UMask": "0077",
        "Restart": "on-failure",
    }
    problems = []
    for k, v in want.items():
        if v not in directives.get(k, []):
            problems.append(f"{k}={v} missing")
    if "@system-service" not in directives.get("SystemCallFilter", []):
        problems.append("SystemCallFilter=@system-service missing")
    # The master key's generations are in the state directory exitnet-keys (the default
    # keys.dir beside /var/lib/exitnet), which the node writes; not a read-only credential.
    if any(v.startswith("EXITNET_MASTER_KEY") for v in directives.get("Environment", [])):
        problems.append("a master key from the environment or a credential is never destroyed")
    if any(v.startswith("EXITNET_KEYS__DIR=/var/lib/exitnet/") for v in directives.get("Environment", [])):
        problems.append("keys.dir inside the data directory")
    stop = directives.get("TimeoutStopSec", ["90"])[-1]
    if not stop.isdigit() or not 5 <= int(stop) <= 30:
        problems.append(f"TimeoutStopSec={stop} (the node drains in under 5 s)")
    report("systemd: hardening, StateDirectory (data and keys apart), Restart, TimeoutStopSec", problems)


# === monitoring: the Grafana dashboards and the Prometheus alerting rules ===

DOCS_OPERATIONS = DEPLOY.parent / "docs" / "operations.md"


def markdown_anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            title = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


def dashboards():
    return sorted((DEPLOY / "grafana").glob("*.json"))


def dashboard_queries(dash):
    """(panel title, query) of every panel target and query variable."""
    out = []
    for panel in dash.get("panels", []):
        for t in panel.get("targets", []) or []:
            out.append((panel.get("title", "?"), t.get("expr", "")))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            out.append((f"variable {var.get('name')}", q.get("query", "") if isinstance(q, dict) else q or ""))
    return out


def check_grafana():
    import json

    files = dashboards()
    if not files:
        report("grafana: dashboards under deploy/grafana/", ["none found"])
    for path in files:
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            report(f"grafana: {rel(path)} is JSON", [str(e)])
            continue
        problems = []
        for key in ("title", "uid", "panels", "schemaVersion"):
            if key not in dash:
                problems.append(f"no {key}")
        variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        if (variables.get("datasource") or {}).get("type") != "datasource":
            problems.append("no datasource variable (the dashboard must not name a data source of one Grafana)")
        ids = [p.get("id") for p in dash.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"panel ids not unique: {ids}")
        for panel in dash.get("panels", []):
            title = panel.get("title", "?")
            g = panel.get("gridPos") or {}
            if not all(k in g for k in ("h", "w", "x", "y")) or g.get("x", 0) + g.get("w", 0) > 24:
                problems.append(f"{title}: gridPos {g}")
            if panel.get("type") == "row":
                continue
            if (panel.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"{title}: data source is not ${{datasource}}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{title}: no query")
            refs = [t.get("refId") for t in targets]
            if len(refs) != len(set(refs)):
                problems.append(f"{title}: refIds not unique")
            if not panel.get("description"):
                problems.append(f"{title}: no description")
        for title, q in dashboard_queries(dash):
            if not q.strip():
                problems.append(f"{title}: an empty query")
            elif "exitnet_" not in q and "process_" not in q:
                problems.append(f"{title}: a query of no Exitnet series: {q}")
        report(f"grafana: {rel(path)}: {len(dash.get('panels', []))} panels, data source variable, queries", problems)


def write_grafana_queries(out):
    """Every dashboard query as a recording rule, with the dashboard's variables
    replaced by values, so that `promtool check rules` parses each as PromQL."""
    import json

    rules = []
    for path in dashboards():
        dash = json.loads(path.read_text(encoding="utf-8"))
        for i, (title, q) in enumerate(dashboard_queries(dash)):
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q, re.S)
            if m:
                q = m.group(1)
            q = q.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            q = re.sub(r"\$\{?\w+\}?", ".*", q)
            rules.append({"record": f"grafana:{path.stem}:{i}", "expr": q, "labels": {"panel": title}})
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "grafana-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} queries")


def check_alerts():
    """Every alert has a severity, a summary and a runbook that is a heading of
    docs/operations.md, and a unit test in alerts.test.yml that expects it to fire
    and one that expects it not to."""
    rules_path = DEPLOY / "prometheus" / "alerts.yml"
    tests_path = DEPLOY / "prometheus" / "alerts.test.yml"
    rules = [r for g in load_all(rules_path)[0]["groups"] for r in g["rules"] if "alert" in r]
    tests = load_all(tests_path)[0]
    if "alerts.yml" not in [Path(f).name for f in tests.get("rule_files", [])]:
        report(f"alerts: {rel(tests_path)} tests alerts.yml", ["rule_files does not name alerts.yml"])
    fires, quiet = set(), set()
    for t in tests.get("tests", []):
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case.get("alertname"))
    anchors = markdown_anchors(DOCS_OPERATIONS)
    names = [r["alert"] for r in rules]
    for name in sorted(set(fires | quiet) - set(names)):
        report(f"alerts: {rel(tests_path)} tests only alerts that exist", [f"{name} is not in {rel(rules_path)}"])
    for r in rules:
        name, problems = r["alert"], []
        if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
            problems.append("severity is not warning or critical")
        ann = r.get("annotations") or {}
        if not ann.get("summary"):
            problems.append("no summary")
        runbook = ann.get("runbook", "")
        if not runbook.startswith("docs/operations.md#"):
            problems.append(f"runbook {runbook!r} is not docs/operations.md#…")
        elif runbook.split("#", 1)[1] not in anchors:
            problems.append(f"runbook {runbook}: no such heading in docs/operations.md")
        if name not in fires:
            problems.append(f"no test in {rel(tests_path)} expects it to fire")
        if name not in quiet:
            problems.append(f"no test in {rel(tests_path)} expects it not to fire (yet)")
        report(f"alerts: {name}: severity, summary, runbook in docs/operations.md, tested firing and quiet", problems)
    if len(names) != len(set(names)):
        report("alerts: names unique", [f"{names}"])


# === probes of a running node (deploy/check's smoke test) ===
# These print nothing when the node answers as expected, else the reason, and exit 1.

# Every service the node reports in grpc.health.v1 ("" is the overall status).
HEALTH_SERVICES = [
    "",
    "exitnet.v1.NodeService",
    "exitnet.v1.DirectoryService",
    "exitnet.v1.ConsentService",
    "exitnet.v1.ReferralService",
    "exitnet.v1.AuditService",
    "exitnet.v1.FederationService",
]

# Every family of node/src/metrics.rs, as OpenMetrics names it (counters get _total
# in their samples, not in the family name).
METRIC_FAMILIES = {
    "exitnet_deliveries": "counter",
    "exitnet_delivery_latency_seconds": "histogram",
    "exitnet_received": "counter",
    "exitnet_sign_in_failures": "counter",
    "exitnet_calls": "counter",
    "exitnet_peer_reachable": "gauge",
    "exitnet_referrals": "gauge",
    "exitnet_outbox_depth": "gauge",
    "exitnet_peer_active": "gauge",
    "exitnet_audit_records": "gauge",
    "exitnet_audit_checkpoint_seq": "gauge",
    "exitnet_audit_checkpoint_timestamp_seconds": "gauge",
    "exitnet_audit_checkpoint_interval_seconds": "gauge",
    "exitnet_purges_pending": "gauge",
    "exitnet_wal_checkpoints": "counter",
    "exitnet_purge_oldest_pending_timestamp_seconds": "gauge",
    "exitnet_build_info": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def health_statuses(addr, ca=None, services=HEALTH_SERVICES):
    """grpc.health.v1 Check for each service: {service: status name}. Plaintext, or TLS
    verified against the PEM file ca."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca:
        creds = grpc.ssl_channel_credentials(Path(ca).read_bytes())
        channel = grpc.secure_channel(addr, creds)
    else:
        channel = grpc.insecure_channel(addr)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        out = {}
        for s in services:
            r = stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5)
            out[s] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        return out


def probe_health(args):
    """health ADDR [--ca PEM]: every service SERVING. health ADDR --stopped: the overall
    status is no longer SERVING (NOT_SERVING, or the listener is gone)."""
    import grpc

    addr, rest = args[0], args[1:]
    ca = rest[rest.index("--ca") + 1] if "--ca" in rest else None
    if "--stopped" in rest:
        try:
            status = health_statuses(addr, ca, [""])[""]
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return 0
            print(f"health check on {addr}: {e.code()} {e.details()}")
            return 1
        if status == "SERVING":
            print("still SERVING")
            return 1
        return 0
    try:
        statuses = health_statuses(addr, ca)
    except grpc.RpcError as e:
        print(f"health check on {addr}: {e.code()} {e.details()}")
        return 1
    bad = {s or '""': st for s, st in statuses.items() if st != "SERVING"}
    if bad:
        print(f"not SERVING: {bad}")
        return 1
    return 0


def parse_openmetrics(text):
    """({family: type}, {sample line name{labels}: value}) of an OpenMetrics text."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return types, samples


def probe_unauthenticated(args):
    """unauthenticated ADDR --ca PEM: NodeService.GetNodeInfo without a token over TLS
    is refused with UNAUTHENTICATED (and counted as a sign-in failure)."""
    import grpc

    addr, ca = args[0], args[args.index("--ca") + 1]
    creds = grpc.ssl_channel_credentials(Path(ca).read_bytes())
    with grpc.secure_channel(addr, creds) as channel:
        call = channel.unary_unary("/exitnet.v1.NodeService/GetNodeInfo")
        try:
            call(b"", timeout=5)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return 0
            print(f"{e.code()} {e.details()}")
            return 1
    print("answered without a token")
    return 1


# Families a node shows from its start; the others appear with their first sample.
METRIC_FAMILIES_ALWAYS = (
    "exitnet_delivery_latency_seconds",
    "exitnet_audit_records",
    "exitnet_audit_checkpoint_seq",
    "exitnet_audit_checkpoint_timestamp_seconds",
    "exitnet_audit_checkpoint_interval_seconds",
    "exitnet_build_info",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def probe_metrics(args):
    """metrics ADDR [SAMPLE>=N ...]: GET /metrics answers 200 in OpenMetrics; every
    family is one of node/src/metrics.rs (as docs/operations.md lists them) with its
    type, those without labels are there from the start, and the named samples are at
    least N. Labels are only those of node/src/metrics.rs; another path is 404."""
    import urllib.error
    import urllib.request

    addr, wants = args[0], args[1:]
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        status, ctype, text = r.status, r.headers.get("content-type", ""), r.read().decode()
    problems = []
    if status != 200:
        problems.append(f"status {status}")
    if not ctype.startswith("application/openmetrics-text"):
        problems.append(f"content-type {ctype}")
    if not text.rstrip().endswith("# EOF"):
        problems.append("no # EOF at the end")
    types, samples = parse_openmetrics(text)
    for name, kind in types.items():
        if name not in METRIC_FAMILIES:
            problems.append(f"family {name} is unknown here: add it to METRIC_FAMILIES in deploy/checks.py "
                            "and to the list in docs/operations.md")
        elif METRIC_FAMILIES[name] != kind:
            problems.append(f"family {name} is a {kind}, expected a {METRIC_FAMILIES[name]}")
    for name in METRIC_FAMILIES_ALWAYS:
        if name not in types:
            problems.append(f"family {name} missing")
    allowed = {"peer", "outcome", "kind", "direction", "state", "reason", "surface", "method", "code", "le",
               "version", "commit"}
    for key in samples:
        for label in re.findall(r'([a-z_]+)="', key):
            if label not in allowed:
                problems.append(f"unexpected label {label} in {key}")
    for want in wants:
        series, minimum = want.rsplit(">=", 1)
        value = samples.get(series)
        if value is None or value < float(minimum):
            problems.append(f"{series} is {value}, expected >= {minimum}")
    try:
        urllib.request.urlopen(f"http://{addr}/other", timeout=5)
        problems.append("GET /other answered")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            problems.append(f"GET /other: {e.code}, expected 404")
    for p in problems:
        print(p)
    return 1 if problems else 0


def main():
    section, args = sys.argv[1], sys.argv[2:]
    if section == "health":
        sys.exit(probe_health(args))
    if section == "metrics":
        sys.exit(probe_metrics(args))
    if section == "unauthenticated":
        sys.exit(probe_unauthenticated(args))
    if section == "grafana-queries":
        write_grafana_queries(args[0])
        sys.exit(0)
    if section == "yaml":
        check_yaml()
    elif section == "kubernetes":
        check_kubernetes(args[0] if args else None)
    elif section == "compose":
        check_compose(args[0] if args else None)
    elif section == "dockerfile":
        check_dockerfile()
    elif section == "systemd":
        check_systemd()
    elif section == "monitoring":
        check_grafana()
        check_alerts()
    else:
        sys.exit(f"unknown section {section}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
