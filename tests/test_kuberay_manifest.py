"""deploy/kuberay/raycluster.yaml, checked without a Kubernetes cluster.

Every document validates against its kind's schema (tests/data/kubernetes.schemas.json.gz:
KubeRay v1.7.0's RayCluster CRD, Kubernetes 1.37's Service and ConfigMap; see its README),
made strict as `kubectl apply` is: an unknown field is an error, not silently dropped. The
checks KubeRay's operator makes beyond its schema are repeated here. The ConfigMap's gateway
config loads with the project's loader and is configs/gateway/ray.yaml plus access control;
ports, probes, mounts and the shell lines the Ray containers run agree with it.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from server.config import load_gateway_config, parse_gateway_config

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "deploy" / "kuberay" / "raycluster.yaml"
SCHEMAS = Path(__file__).resolve().parent / "data" / "kubernetes.schemas.json.gz"
#: sha256 of the uncompressed schemas, as tests/data/README.md records with their sources.
SCHEMAS_SHA256 = "528aaf626b5bb888cdbdeb2c84977af15539f0c51ad8d18fbc6c81d9fb17e404"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
#: The `ray start` line KubeRay 1.7 writes to $KUBERAY_GEN_RAY_START_CMD (convertParamMap:
#: sorted flags, each with a space either side; `block` always added).
GENERATED_HEAD_START = (
    "ray start --head  --block  --dashboard-host=0.0.0.0  --memory=8589934592 "
    " --metrics-export-port=8080  --node-manager-port=6380  --num-cpus=4 "
)


def documents() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind (one of each)."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def schemas() -> dict[str, Any]:
    """`apiVersion kind` → JSON schema."""
    return json.loads(gzip.decompress(SCHEMAS.read_bytes()))


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply` (field validation Strict) does.

    A CRD's structural schema only prunes unknown fields; the API server's strict field
    validation reports each one. Objects that keep unknown fields
    (x-kubernetes-preserve-unknown-fields) or declare their own additionalProperties stay.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one document, as `path: message`."""
    known = schemas()
    schema = strict(known[f"{doc['apiVersion']} {doc['kind']}"])
    errors = list(Draft202012Validator(schema).iter_errors(doc))
    if doc["apiVersion"] == "ray.io/v1":
        # A CRD's schema leaves metadata to the API server, which checks it as ObjectMeta.
        meta = {"$ref": f"#/$defs/{OBJECT_META}", "$defs": known["v1 Service"]["$defs"]}
        errors += Draft202012Validator(strict(meta)).iter_errors(doc.get("metadata", {}))
    return [f"{e.json_path}: {e.message}" for e in errors]


def groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The head group, then every worker group."""
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    """KubeRay's Ray container: the first one of the group's pod template."""
    return group["template"]["spec"]["containers"][0]


def configmap_config() -> dict[str, Any]:
    """The gateway config the ConfigMap holds, as data."""
    cm = documents()["ConfigMap"]
    (key,) = cm["data"]
    return yaml.safe_load(cm["data"][key])


# --- schemas -------------------------------------------------------------------------------


def test_the_vendored_schemas_are_the_ones_the_readme_names() -> None:
    data = gzip.decompress(SCHEMAS.read_bytes())
    assert hashlib.sha256(data).hexdigest() == SCHEMAS_SHA256
    assert SCHEMAS_SHA256 in (SCHEMAS.parent / "README.md").read_text()


def test_every_document_validates_against_its_schema() -> None:
    docs = documents()
    assert set(docs) == {"ConfigMap", "RayCluster", "Service"}
    for kind, doc in docs.items():
        assert schema_errors(doc) == [], kind


def test_the_schemas_constrain() -> None:
    """A misspelt field, a number where KubeRay wants a string, a bad port: each an error."""
    docs = documents()
    cluster = copy.deepcopy(docs["RayCluster"])
    head = ray_container(cluster["spec"]["headGroupSpec"])
    head["imagePulPolicy"] = head.pop("imagePullPolicy")
    cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]["node-manager-port"] = 6380
    cluster["spec"]["workerGroupSpecs"][0]["minReplica"] = 1
    cluster["metadata"]["labelz"] = {}
    errors = "\n".join(schema_errors(cluster))
    for needle in ("imagePulPolicy", "6380 is not of type 'string'", "minReplica", "labelz"):
        assert needle in errors
    service = copy.deepcopy(docs["Service"])
    service["spec"]["ports"][0]["port"] = "http"
    assert any("'http' is not of type 'integer'" in e for e in schema_errors(service))


def test_kuberays_own_checks() -> None:
    """What KubeRay v1.7.0's ValidateRayClusterMetadata / ValidateRayClusterSpec refuse."""
    cluster = documents()["RayCluster"]
    name = cluster["metadata"]["name"]
    assert len(name) <= 53 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    spec = cluster["spec"]
    assert spec.get("enableInTreeAutoscaling") is False
    for group in groups(cluster):
        assert group["template"]["spec"]["containers"]
        params = group["rayStartParams"]
        # Ray resources go in one place: the group's `resources` or its rayStartParams.
        in_params = {"num-cpus", "num-gpus", "memory", "resources"} & set(params)
        assert not (in_params and group.get("resources"))
        assert "labels" not in params  # refused: the group's `labels` instead
    names = [w["groupName"] for w in spec["workerGroupSpecs"]]
    assert len(set(names)) == len(names)
    for worker in spec["workerGroupSpecs"]:
        # Autoscaling off: both bounds set, and KubeRay keeps replicas between them.
        assert 0 <= worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]


# --- the gateway config it runs ------------------------------------------------------------


def test_the_configmap_is_the_shipped_ray_config_plus_access_control() -> None:
    data = configmap_config()
    config = parse_gateway_config(data, source="raycluster.yaml ConfigMap")
    assert config.lanes.kind == "ray"
    assert config.lanes.ray.address == "auto" and config.lanes.ray.per_node
    assert config.auth.tokens, "the gateway listens on the pod's every interface"
    shipped = REPO / "configs" / "gateway" / "ray.yaml"
    without_auth = {k: v for k, v in data.items() if k != "auth"}
    assert without_auth == yaml.safe_load(shipped.read_text())
    assert parse_gateway_config(without_auth) == load_gateway_config(shipped)


def test_mounts_tokens_and_models_match_the_config() -> None:
    docs = documents()
    config = parse_gateway_config(configmap_config())
    head_group = docs["RayCluster"]["spec"]["headGroupSpec"]
    head = ray_container(head_group)
    volumes = {v["name"]: v for v in head_group["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in head["volumeMounts"]}
    # The config file the gateway is started with is the ConfigMap's, mounted.
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (key,) = docs["ConfigMap"]["data"]
    assert f"--config {mounts['config']}/{key}" in head["args"][0]
    # Every token file is a key of the Secret the header tells the operator to create.
    secret = volumes["tokens"]["secret"]["secretName"]
    header = MANIFEST.read_text().split("\napiVersion:", 1)[0]
    assert f"kubectl create secret generic {secret} " in header
    for token in config.auth.tokens:
        path = PurePosixPath(str(token.file))
        assert str(path.parent) == mounts["tokens"]
        assert f"--from-file={path.name}=secrets/{path.name}" in header
    # ONNX exports go to a writable volume at the image's onnx_dir (WORKDIR /app).
    for group in groups(docs["RayCluster"]):
        container_mounts = {m["name"]: m["mountPath"] for m in ray_container(group)["volumeMounts"]}
        assert container_mounts["models"] == f"/app/{PurePosixPath(config.onnx_dir).parts[0]}"


def test_ports_and_the_gateway_service_match_the_config() -> None:
    docs = documents()
    config = parse_gateway_config(configmap_config())
    cluster = docs["RayCluster"]
    head = ray_container(cluster["spec"]["headGroupSpec"])
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["http"] == config.port and ports["grpc"] == config.grpc_port
    assert ports["gcs-server"] == 6379  # KubeRay's default GCS port: RAY_ADDRESS points there
    service = docs["Service"]
    # The labels KubeRay puts on the head pod.
    assert service["spec"]["selector"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    exposed = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    assert exposed == {"http": config.port, "grpc": config.grpc_port}


def test_probes_are_the_containers_own() -> None:
    """KubeRay's default probes ask the dashboard agent, which plain `ray` does not run."""
    cluster = documents()["RayCluster"]
    head = ray_container(cluster["spec"]["headGroupSpec"])
    assert head["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert head["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for group in groups(cluster):
        container = ray_container(group)
        raylet = group["rayStartParams"]["node-manager-port"]
        assert "readinessProbe" in container and "livenessProbe" in container
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            if "tcpSocket" in probe:  # the raylet, on the port its group fixes
                assert str(probe["tcpSocket"]["port"]) == raylet


def test_image_ray_version_and_every_nodes_lanes_fit_it() -> None:
    cluster = documents()["RayCluster"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    lock = (REPO / "requirements.lock").read_text()
    ray_pin = re.search(r"^ray==(\S+)$", lock, re.M)
    assert ray_pin, "the image installs ray from requirements.lock"
    assert cluster["spec"]["rayVersion"] == ray_pin.group(1)
    config = parse_gateway_config(configmap_config())
    assert config.lanes.ray.per_node and config.lanes.ray.num_gpus == 0
    # per_node: every node runs each group's lanes, and a lane's actor asks for its threads
    # as CPUs, so that many CPUs must be Ray's on every node (or lanes wait, unplaced).
    wanted = sum(g.count * (g.threads or 0) for g in config.scheduler.groups())
    for group in groups(cluster):
        container = ray_container(group)
        assert container["image"] == compose["services"]["gateway"]["image"]
        limit = int(container["resources"]["limits"]["cpu"])
        ray_cpus = int(group["rayStartParams"].get("num-cpus", limit))  # KubeRay's rule
        assert 0 < wanted <= ray_cpus <= limit, container["name"]


# --- the shell lines the Ray containers run -------------------------------------------------


def run_container_line(line: str, generated: str, tmp_path: Path) -> list[str]:
    """Run a container's `bash -c` line with recording `ray` and `mlws` on PATH.

    The real `ray start` would start a cluster on this machine's port 6379; what is checked
    is the line: which commands it runs, in which order, with which arguments.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.log"
    for name in ("ray", "mlws"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env["KUBERAY_GEN_RAY_START_CMD"] = generated
    subprocess.run(["/bin/bash", "-c", "--", line], env=env, check=True, timeout=30)
    return [" ".join(call.split()) for call in log.read_text().splitlines()]


def test_the_head_starts_ray_then_execs_the_gateway(tmp_path: Path) -> None:
    cluster = documents()["RayCluster"]
    # Without this annotation KubeRay replaces the command with `ray start ... --block`.
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    head = ray_container(cluster["spec"]["headGroupSpec"])
    assert head["command"] == ["/bin/bash", "-c", "--"]
    (line,) = head["args"]
    calls = run_container_line(line, GENERATED_HEAD_START, tmp_path)
    assert calls == [
        " ".join(GENERATED_HEAD_START.replace("--block", "").split()),
        "mlws serve --host 0.0.0.0 --config /etc/mlws/ray.yaml",
    ]
    assert "exec mlws serve" in line  # the gateway is the main process: SIGTERM drains it


def test_workers_run_only_ray_and_keep_blocking(tmp_path: Path) -> None:
    for worker in documents()["RayCluster"]["spec"]["workerGroupSpecs"]:
        container = ray_container(worker)
        assert container["command"] == ["/bin/bash", "-c", "--"]
        (line,) = container["args"]
        generated = "ray start  --address=mlws-head-svc:6379  --block  --node-manager-port=6380 "
        calls = run_container_line(line, generated, tmp_path / worker["groupName"])
        assert calls == [" ".join(generated.split())]
