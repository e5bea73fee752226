#!/usr/bin/python3
"""Static checks of the deployment files, run by ctest:

  manifests_test.py k8s    SOURCE_DIR CONVOKE_SERVER   deploy/k8s/*.yaml
  manifests_test.py docker SOURCE_DIR CONVOKE_SERVER   deploy/docker/Dockerfile

k8s: every manifest parses; field names and required fields are checked
against the Kubernetes API models of python3-kubernetes (Debian has no
kubeconform); the references between the manifests hold (selectors and
labels, port names and numbers, ConfigMap and Secret names and keys, mount
paths); the server's configuration in the ConfigMap is accepted by the real
`convoke-server --check-config` (with the pod's mounts mapped to a temporary
directory) and agrees with the manifests (ports, bind addresses, paths on
writable mounts, memory limit, the termination timings of lame duck and
drain, the image's version and uid).

docker: the Dockerfile's stages, user, volumes, ports, health check,
version label and entry point agree with the image's configuration, which
the real server refuses without authentication and TLS and accepts with the
documented opt-outs.
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

import yaml

problems = []


def check(ok, text):
    if not ok:
        problems.append(text)
    return ok


def project_version(src):
    with open(os.path.join(src, "CMakeLists.txt")) as f:
        m = re.search(r"project\(convoke VERSION (\d+\.\d+\.\d+)", f.read())
    return m.group(1)


def parse_size(text):
    """'256MiB', '64KiB', '512Mi' (Kubernetes), '1G', '65536' -> bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?|[kMG]?)", str(text).strip())
    if not m:
        raise ValueError(f"size {text!r}")
    n, unit = int(m.group(1)), m.group(2).rstrip("B")
    factor = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30,
              "K": 1 << 10, "k": 1000, "M": 1 << 20, "G": 1 << 30}[unit]
    return n * factor


def parse_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    if not m:
        raise ValueError(f"duration {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def run_check_config(server, config_path, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([server, "--config", config_path, "--check-config"],
                       capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout + p.stderr


# -- Kubernetes ----------------------------------------------------------------

def schema_check(doc, where):
    """Unknown fields and missing required fields, from python3-kubernetes'
    models (the OpenAPI of Kubernetes 1.22)."""
    try:
        import kubernetes.client as kc
    except ImportError:
        check(False, "python3-kubernetes is not installed (scripts/lib.sh TEST_PACKAGES)")
        return
    kinds = {("v1", "ConfigMap"): "V1ConfigMap", ("apps/v1", "Deployment"): "V1Deployment",
             ("v1", "Service"): "V1Service", ("v1", "Secret"): "V1Secret",
             ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget"}
    model = kinds.get((doc.get("apiVersion"), doc.get("kind")))
    if not check(model, f"{where}: unexpected apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}"):
        return

    def walk(value, type_name, path):
        if type_name.startswith("list["):
            if check(isinstance(value, list), f"{where}: {path} must be a list"):
                for i, v in enumerate(value):
                    walk(v, type_name[5:-1], f"{path}[{i}]")
            return
        if type_name.startswith("dict("):
            check(isinstance(value, dict), f"{where}: {path} must be a map")
            return
        if type_name in ("str", "int", "bool", "float", "object", "datetime", "date"):
            expected = {"str": str, "int": int, "bool": bool, "float": (int, float)}.get(type_name)
            if expected:
                check(isinstance(value, expected) and not (expected is int and isinstance(value, bool)),
                      f"{where}: {path} must be {type_name}, is {value!r}")
            return
        cls = getattr(kc, type_name)
        if not check(isinstance(value, dict), f"{where}: {path} must be an object ({type_name})"):
            return
        by_json = {j: a for a, j in cls.attribute_map.items()}
        for key, v in value.items():
            if check(key in by_json, f"{where}: {path}.{key} is not a field of {type_name}"):
                walk(v, cls.openapi_types[by_json[key]], f"{path}.{key}")
        # Required fields: the model's constructor refuses None for them.
        try:
            cls(**{by_json[k]: True for k in value if k in by_json})
        except ValueError as e:
            check(False, f"{where}: {path}: {e}")
        except Exception:  # a field given True where the model wants a type: checked above
            pass

    walk(doc, model, doc["kind"])


def check_k8s(src, server):
    k8s_dir = os.path.join(src, "deploy", "k8s")
    docs = {}
    with open(os.path.join(k8s_dir, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    files = sorted(f for f in os.listdir(k8s_dir) if f.endswith(".yaml") and f != "kustomization.yaml")
    check(sorted(kustomization["resources"]) == files,
          f"kustomization.yaml lists {kustomization['resources']}, the directory has {files}")
    for name in files:
        with open(os.path.join(k8s_dir, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                schema_check(doc, name)
                check(doc["kind"] not in docs, f"two {doc['kind']} manifests")
                docs[doc["kind"]] = doc
    for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"):
        if not check(kind in docs, f"no {kind}"):
            return
    cm, dep, svc, pdb = (docs[k] for k in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"))

    # Selectors and labels.
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]

    def selects(selector, what):
        check(selector and all(labels.get(k) == v for k, v in selector.items()),
              f"{what} selector {selector} does not match the pod labels {labels}")

    selects(dep["spec"]["selector"]["matchLabels"], "Deployment")
    selects(svc["spec"]["selector"], "Service")
    selects(pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    replicas = dep["spec"].get("replicas", 1)
    if replicas == 1:
        check(dep["spec"].get("strategy", {}).get("type") == "Recreate",
              "one replica without clustering: old and new pods must not relay side by side (Recreate)")
    check("minAvailable" not in pdb["spec"] or pdb["spec"]["minAvailable"] < replicas,
          "the PodDisruptionBudget's minAvailable would block every node drain")

    containers = pod["spec"]["containers"]
    check(len(containers) == 1, "one container expected")
    c = containers[0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}

    def port_of(ref, what):
        if isinstance(ref, int):
            check(ref in ports.values(), f"{what}: port {ref} is not a container port")
            return ref
        check(ref in ports, f"{what}: no container port named {ref}")
        return ports.get(ref)

    for p in svc["spec"]["ports"]:
        port_of(p.get("targetPort", p["port"]), f"Service port {p['name']}")

    # The server's configuration, as the pod sees it.
    cm_name = cm["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for m in c["volumeMounts"]:
        check(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
    files_in_pod = {}  # path in the container -> (volume, key)
    for m in c["volumeMounts"]:
        v = volumes.get(m["name"], {})
        if "configMap" in v:
            check(v["configMap"]["name"] == cm_name,
                  f"volume {m['name']} names ConfigMap {v['configMap']['name']}, the manifest is {cm_name}")
            for item in v["configMap"].get("items", [{"key": k, "path": k} for k in cm["data"]]):
                check(item["key"] in cm["data"], f"ConfigMap {cm_name} has no key {item['key']}")
                files_in_pod[os.path.join(m["mountPath"], item["path"])] = ("configMap", item["key"])
        if "secret" in v:
            for item in v["secret"].get("items", []):
                files_in_pod[os.path.join(m["mountPath"], item["path"])] = ("secret", item["key"])
    args = c.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    if not check(config_path in files_in_pod and files_in_pod[config_path][0] == "configMap",
                 f"--config {config_path} is not a file of the mounted ConfigMap"):
        return
    toml_text = cm["data"][files_in_pod[config_path][1]]
    cfg = tomllib.loads(toml_text)
    listen, admin = cfg.get("listen", {}), cfg.get("admin", {})
    check(listen.get("port", 7420) == ports.get("agents"), "listen.port differs from the container port agents")
    check(admin.get("port", 7421) == ports.get("admin"), "admin.port differs from the container port admin")
    check(listen.get("host") == "0.0.0.0", "listen.host must be 0.0.0.0 for the Service to reach it")
    check(admin.get("host") == "0.0.0.0", "admin.host must be 0.0.0.0 for the kubelet's probes")
    check(admin.get("enabled", True), "the probes need the admin listener")

    # Probes: the admin port, /healthz for liveness and startup, /readyz for readiness.
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        p = c.get(probe)
        if check(p and "httpGet" in p, f"{probe} must be an httpGet probe"):
            check(p["httpGet"]["path"] == path, f"{probe} must ask {path}")
            check(port_of(p["httpGet"]["port"], probe) == ports.get("admin"), f"{probe} must use the admin port")
            check(p["httpGet"].get("scheme", "HTTP") == ("HTTPS" if admin.get("tls") else "HTTP"),
                  f"{probe}'s scheme does not match admin.tls")

    # Paths the server reads or writes must be mounted; written ones writable.
    sc = c.get("securityContext", {})
    read_only_root = sc.get("readOnlyRootFilesystem", False)

    def mount_of(path):
        best = None
        for mp in mounts:
            if path == mp or path.startswith(mp.rstrip("/") + "/"):
                if best is None or len(mp) > len(best):
                    best = mp
        return best

    for key, path, written in (("auth.credentials", cfg.get("auth", {}).get("credentials"), False),
                               ("auth.token-file", cfg.get("auth", {}).get("token-file"), False),
                               ("tls.cert", cfg.get("tls", {}).get("cert"), False),
                               ("tls.key", cfg.get("tls", {}).get("key"), False),
                               ("trace.file", cfg.get("trace", {}).get("file"), True),
                               ("log.file", cfg.get("log", {}).get("file"), True)):
        if not path or path == "-":
            continue
        mp = mount_of(path)
        if not check(mp, f"{key} {path} is on no volume"):
            continue
        if written:
            check(not mounts[mp].get("readOnly"), f"{key} {path} is on a read-only mount")
        else:
            check(path in files_in_pod, f"{key} {path} is not a file of a mounted ConfigMap or Secret")
    if read_only_root:
        check(cfg.get("trace", {}).get("file", "-") == "-" or mount_of(cfg["trace"]["file"]),
              "the root filesystem is read-only: the trace file needs a volume")

    # Memory: the server's buffers must fit under the limit.
    limits = c["resources"]["limits"]
    buffered = parse_size(cfg.get("limits", {}).get("max-buffered-bytes", "512MiB"))
    trace_buffer = parse_size(cfg.get("trace", {}).get("buffer", "16MiB"))
    check(parse_size(limits["memory"]) >= buffered + trace_buffer + (128 << 20),
          f"memory limit {limits['memory']} leaves less than 128 MiB beyond limits.max-buffered-bytes "
          f"+ trace.buffer")
    data = volumes.get(mounts.get(mount_of(cfg.get("trace", {}).get("file", "/")) or "", {}).get("name"), {})
    if "emptyDir" in data and "sizeLimit" in data["emptyDir"]:
        t = cfg.get("trace", {})
        need = parse_size(t.get("max-file-bytes", "64MiB")) * (t.get("max-files", 5) + 1)
        check(parse_size(data["emptyDir"]["sizeLimit"]) >= need,
              f"the trace volume ({data['emptyDir']['sizeLimit']}) is smaller than the rotated trace files ({need} bytes)")

    # Termination: preStop's lame duck, then SIGTERM's drain, within the grace period.
    drain = parse_seconds(cfg.get("timeouts", {}).get("drain", "5s"))
    duck = parse_seconds(cfg.get("lame-duck", {}).get("duration", "30s"))
    grace_period = pod["spec"].get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    script = " ".join(pre)
    check("kill -USR2 1" in script, "preStop must start lame duck (SIGUSR2 to the server, PID 1)")
    m = re.search(r"seq (\d+)", script)
    if check(m, "preStop must wait for the server, bounded (seq N)"):
        bound = int(m.group(1))
        check(bound >= duck + drain, f"preStop waits {bound} s, lame duck takes up to {duck + drain} s")
        check(grace_period >= bound + drain + 5,
              f"terminationGracePeriodSeconds {grace_period} < preStop {bound} s + drain {drain} s + 5 s")

    # The image: the project's version, the uid the Dockerfile creates.
    version = project_version(src)
    check(c["image"].endswith(":" + version), f"image {c['image']} is not version {version}")
    with open(os.path.join(src, "deploy", "docker", "Dockerfile")) as f:
        uid = re.search(r"useradd .*--uid (\d+)", f.read().replace("\\\n", " "))
    psc = pod["spec"].get("securityContext", {})
    check(uid and psc.get("runAsUser") == int(uid.group(1)), "runAsUser is not the image's convoke uid")
    check(psc.get("runAsNonRoot") is True, "runAsNonRoot")

    # The real server accepts the configuration, with the pod's mounts in a
    # temporary directory.
    with tempfile.TemporaryDirectory() as tmp:
        def local(path):
            return tmp + path

        remapped = toml_text
        for mp in sorted(mounts, key=len, reverse=True):
            remapped = remapped.replace(f'"{mp}/', f'"{local(mp)}/')
            os.makedirs(local(mp), exist_ok=True)
        for path, (kind, key) in files_in_pod.items():
            if kind == "secret" and "credentials" in key:
                p = subprocess.run([server, "credentials", "add", local(path), "k8s-test-agent", "--all"],
                                   capture_output=True, text=True, timeout=60)
                check(p.returncode == 0, f"credentials add: {p.stderr}")
        conf = os.path.join(tmp, "convoke-server.toml")
        with open(conf, "w") as f:
            f.write(remapped)
        rc, out = run_check_config(server, conf)
        check(rc == 0, f"convoke-server --check-config refuses the ConfigMap's configuration:\n{out}")
        # And the check is alive: without the credentials the same file is refused.
        with open(conf, "w") as f:
            f.write(re.sub(r'(?m)^credentials = .*$', "", remapped))
        rc, out = run_check_config(server, conf)
        check(rc == 78, f"without auth.credentials the configuration should be refused (78), got {rc}")


# -- Dockerfile -----------------------------------------------------------------

def dockerfile_instructions(path):
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def check_docker(src, server):
    ins = dockerfile_instructions(os.path.join(src, "deploy", "docker", "Dockerfile"))
    args_before = {r.split("=", 1)[0]: r.split("=", 1)[1] for w, r in ins[:next(
        i for i, (w, _) in enumerate(ins) if w == "FROM")] if w == "ARG" and "=" in r}
    stages = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    check(len(stages) >= 2, "the Dockerfile must have a build stage and a runtime stage")
    for i in stages:
        image = ins[i][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args_before.get(m.group(1), "?"), image)
        check(image == "debian:bookworm-slim", f"FROM {image}: stages are on debian:bookworm-slim")
    final = ins[stages[-1]:]

    def all_of(word):
        return [r for w, r in final if w == word]

    user = all_of("USER")
    check(user and user[-1].split(":")[0] not in ("root", "0"), "the runtime stage must run as a non-root USER")
    check(any("CONVOKE_VERSION" == r.split("=")[0] for r in all_of("ARG")), "ARG CONVOKE_VERSION in the runtime stage")
    check(any('org.opencontainers.image.version="${CONVOKE_VERSION}"' in r for r in all_of("LABEL")),
          "LABEL org.opencontainers.image.version from the build arg")
    copies = [r.split() for r in all_of("COPY") if "convoke-server.toml" in r]
    if not check(copies, "the image's configuration is not copied in"):
        return
    conf_src, conf_dst = copies[0][-2], copies[0][-1]
    with open(os.path.join(src, conf_src), "rb") as f:
        cfg = tomllib.load(f)
    entry = all_of("ENTRYPOINT")
    check(entry and entry[-1].startswith('["/usr/bin/convoke-server"'),
          "ENTRYPOINT must exec convoke-server (PID 1 takes the signals: docker stop, preStop)")
    check(entry and f'"--config", "{conf_dst}"' in entry[-1], f"ENTRYPOINT must read {conf_dst}")
    listen_port = cfg.get("listen", {}).get("port", 7420)
    admin_port = cfg.get("admin", {}).get("port", 7421)
    exposed = {int(p.split("/")[0]) for r in all_of("EXPOSE") for p in r.split()}
    check({listen_port, admin_port} <= exposed, f"EXPOSE {exposed} lacks {listen_port} or {admin_port}")
    volumes = [v for r in all_of("VOLUME") for v in re.findall(r'"([^"]+)"', r)]
    check(os.path.dirname(conf_dst) in volumes, "the configuration directory is a VOLUME")
    trace = cfg.get("trace", {}).get("file", "-")
    check(trace == "-" or any(trace.startswith(v + "/") for v in volumes), "the trace file is not in a VOLUME")
    health = all_of("HEALTHCHECK")
    check(health and "/healthz" in health[-1] and f"127.0.0.1/{admin_port}" in health[-1],
          f"HEALTHCHECK must ask /healthz on 127.0.0.1:{admin_port}")
    check(cfg.get("admin", {}).get("enabled", True), "the health check needs the admin listener")

    # The image's configuration: refused as shipped (secure default), accepted
    # with the opt-outs docs/deploy.md gives for a trial.
    with tempfile.TemporaryDirectory() as tmp:
        text = open(os.path.join(src, conf_src)).read()
        for v in volumes:
            os.makedirs(tmp + v, exist_ok=True)
            text = text.replace(f'"{v}/', f'"{tmp}{v}/')
        conf = os.path.join(tmp, "convoke-server.toml")
        with open(conf, "w") as f:
            f.write(text)
        rc, out = run_check_config(server, conf)
        check(rc == 78 and "not authenticated" in out,
              f"the image's configuration must be refused without authentication (got {rc}: {out})")
        rc, out = run_check_config(server, conf, {"CONVOKE_AUTH_ALLOW_ANONYMOUS": "true",
                                                  "CONVOKE_LISTEN_ALLOW_PLAINTEXT": "true"})
        check(rc == 0, f"the image's configuration with the trial opt-outs is refused:\n{out}")


def main():
    what, src, server = sys.argv[1:4]
    {"k8s": check_k8s, "docker": check_docker}[what](src, server)
    for p in problems:
        print("FAIL:", p)
    if problems:
        return 1
    print(f"{what}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
