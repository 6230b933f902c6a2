"""Structural checks of the deployment artifacts, run by deploy/check.

Usage: python deploy/checks.py SECTION [ARGS]; SECTION is one of yaml, kubernetes,
compose, dockerfile, systemd. Prints one line per check, `ok   …` or `FAIL …` (with
the reason on the following indented lines), and exits 1 if any check failed.
Needs PyYAML (target/tools/venv, installed by scripts/install-tools).
"""

import re
import sys
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


def port_number(c, port):
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def node_probe_problems(c):
    problems = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            problems.append(f"no {kind}")
            continue
        if "grpc" in probe:
            g = probe["grpc"]
            # The node's client API and federation listener are TLS off loopback; a
            # plaintext gRPC probe (the kubelet's default) can never pass.
            if g.get("port") != 7711:
                problems.append(f"{kind}: grpc probe on {g.get('port')}, not the client API 7711")
            if g.get("mode") != "TLS":
                problems.append(f"{kind}: grpc probe without mode: TLS against a TLS listener")
        elif "tcpSocket" in probe:
            port = port_number(c, probe["tcpSocket"].get("port"))
            if port != 7711:
                problems.append(f"{kind}: tcpSocket on {port}, not the client API 7711")
        elif "exec" in probe:
            cmd = probe["exec"].get("command") or []
            if not cmd or not cmd[0].endswith("exitnetctl"):
                problems.append(f"{kind}: exec probe is not exitnetctl")
        else:
            problems.append(f"{kind}: neither grpc, tcpSocket nor exec")
    return problems


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

    node = next((w for w in workloads if w["metadata"]["name"] == "exitnet-node"), None)
    if node is None:
        report("kubernetes: exitnet-node workload", ["not found"])
    else:
        pod = pod_spec(node)
        c = pod["containers"][0]
        report("kubernetes: exitnet-node probes on the client API (7711) or exitnetctl, never plaintext gRPC on a TLS port", node_probe_problems(c))
        problems = []
        if pod.get("enableServiceLinks") is not False:
            problems.append("enableServiceLinks must be false: service links inject EXITNET_* variables the node rejects")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append("automountServiceAccountToken should be false (the node never calls the Kubernetes API)")
        report("kubernetes: exitnet-node has no service-link variables and no API token", problems)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        args = c.get("args", [])
        problems = []
        for path in ("/var/lib/exitnet", "/etc/exitnet", "/run/secrets", "/tmp"):
            if path not in mounts:
                problems.append(f"no volume at {path}")
        if "--config" not in args or not args[args.index("--config") + 1].startswith("/etc/exitnet/"):
            problems.append("args do not name --config under /etc/exitnet")
        claims = [t["metadata"]["name"] for t in node["spec"].get("volumeClaimTemplates", [])]
        if mounts.get("/var/lib/exitnet", {}).get("name") not in claims:
            problems.append("the data directory is not on a PersistentVolumeClaim")
        ports = {p.get("containerPort") for p in c.get("ports", [])}
        if not {7710, 7711, 9711} <= ports:
            problems.append(f"container ports {sorted(ports)} lack 7710, 7711 or 9711")
        report("kubernetes: exitnet-node mounts data (PVC), config, secrets, /tmp; ports 7710 7711 9711", problems)

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
        for ref in s.get("secrets", []):
            src = ref["source"] if isinstance(ref, dict) else ref
            if src not in declared:
                problems.append(f"{name}: secret {src} is not declared")
    report("compose: each node mounts an existing config file, a data volume, declared secrets", problems)

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
    if not {"7710", "7711", "9711"} <= expose:
        problems.append(f"EXPOSE {sorted(expose)} lacks 7710, 7711 or 9711")
    if not any(l.upper().startswith("VOLUME") and "/var/lib/exitnet" in l for l in final):
        problems.append("no VOLUME /var/lib/exitnet")
    if not any(l.upper().startswith("HEALTHCHECK") for l in final):
        problems.append("no HEALTHCHECK")
    if re.search(r"\b(curl|wget)\b|ADD\s+https?://", text.split("FROM", 2)[-1]):
        problems.append("the runtime stage downloads something")
    report("Dockerfile: --release --locked both binaries; EXPOSE 7710 7711 9711; VOLUME; HEALTHCHECK", problems)

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
        "StateDirectory": "exitnet",
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
    if not any(v.startswith("master-key:") for v in directives.get("LoadCredential", [])):
        problems.append("the master key is not a LoadCredential")
    if "EXITNET_MASTER_KEY_FILE=%d/master-key" not in directives.get("Environment", []):
        problems.append("EXITNET_MASTER_KEY_FILE does not point at the credential")
    stop = directives.get("TimeoutStopSec", ["90"])[-1]
    if not stop.isdigit() or not 5 <= int(stop) <= 30:
        problems.append(f"TimeoutStopSec={stop} (the node drains in under 5 s)")
    report("systemd: hardening, StateDirectory, master key by LoadCredential, Restart, TimeoutStopSec", problems)


def main():
    section, args = sys.argv[1], sys.argv[2:]
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
    else:
        sys.exit(f"unknown section {section}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
