"""deploy/: every manifest parses, and refers only to what the app really has.

Environment variables are collected from the source (`os.environ`/`load_environment` reads),
ports and options from the `reconcile serve` command itself, probe paths from the app's
routers; the manifests are checked against those, so renaming one side breaks this test.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from billing_reconciler.cli import app as cli_app
from billing_reconciler.desired import load_desired
from billing_reconciler.runtime.health import Readiness, health_router
from billing_reconciler.runtime.metrics import Metrics, metrics_router
from billing_reconciler.runtime.webhooks import WEBHOOK_PATH

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SOURCE = ROOT / "src" / "billing_reconciler"
IMAGE = "billing-reconciler"

# Read by the interpreter and pip inside the image, not by the app.
INTERPRETER_VARIABLES = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]+$")


# --------------------------------------------------------------------------------------------
# What the app really has
# --------------------------------------------------------------------------------------------


def _string_args(call: ast.Call) -> Iterator[str]:
    for arg in call.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def app_environment_variables() -> set[str]:
    """Names read through `os.environ[...]`, `.get(...)`, `os.getenv(...)`, `_value_or_file`."""
    names: set[str] = set()
    for file in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                called = _called_name(node)
                if called not in {"get", "getenv", "_value_or_file"}:
                    continue
                for value in filter(_ENV_NAME.match, _string_args(node)):
                    names.add(value)
                    if called == "_value_or_file":  # NAME or a file named by NAME_FILE
                        names.add(f"{value}_FILE")
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "environ"
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
            ):
                names.add(node.slice.value)
    return names


@pytest.fixture(scope="module")
def app_env() -> set[str]:
    return app_environment_variables()


def serve_command() -> Any:
    """The click command typer builds for `reconcile serve` (typer vendors its own click)."""
    return typer.main.get_command(cli_app).commands["serve"]  # type: ignore[attr-defined]


def serve_options() -> dict[str, Any]:
    return {opt: param for param in serve_command().params for opt in param.opts}


def serve_port() -> int:
    port = serve_options()["--port"].default
    assert isinstance(port, int)
    return port


def app_paths() -> set[str]:
    routers = [
        health_router(lambda: Readiness(ready=True)),
        metrics_router(Metrics()),
    ]
    paths = {getattr(route, "path", "") for router in routers for route in router.routes}
    return paths | {WEBHOOK_PATH}


def check_serve_args(args: list[str]) -> int:
    """`args` run `reconcile serve` with known options only; returns the port it listens on."""
    assert args[0] == "serve", args
    options = serve_options()
    port = serve_port()
    words = iter(args[1:])
    for word in words:
        name, has_value, value = word.partition("=")
        assert name in options, f"reconcile serve has no option {name}"
        if getattr(options[name], "is_flag", False):
            continue
        value = value if has_value else next(words)
        if name == "--port":
            port = int(value)
    return port


# --------------------------------------------------------------------------------------------
# The manifests
# --------------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for file in sorted(KUBERNETES.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(file.read_text()) if d is not None)
    return documents


def of_kind(kind: str, file: str | None = None) -> list[dict[str, Any]]:
    if file is not None:
        docs = list(yaml.safe_load_all((KUBERNETES / file).read_text()))
        return [d for d in docs if d and d["kind"] == kind]
    return [d for d in k8s_documents() if d["kind"] == kind]


def our_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    ours = [c for c in containers if IMAGE in c["image"]]
    assert ours, "the Deployment runs no billing-reconciler container"
    return ours


def deployments() -> list[tuple[str, dict[str, Any]]]:
    return [
        (file, deployment)
        for file in ("deployment.yaml", "deployment-git-sync.yaml")
        for deployment in of_kind("Deployment", file)
    ]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def dockerfile(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_instructions() if name == instruction]


def dockerfile_env() -> set[str]:
    names: set[str] = set()
    for args in dockerfile("ENV"):
        for pair in shlex.split(args):
            names.add(pair.split("=", 1)[0])
    return names


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_the_app_reads_the_documented_variables(app_env: set[str]) -> None:
    assert {
        "STRIPE_API_KEY",
        "STRIPE_API_KEY_FILE",
        "BILLING_WEBHOOK_SECRETS",
        "BILLING_WEBHOOK_SECRETS_FILE",
        "BILLING_DATABASE_URL",
        "STRIPE_API_BASE",
    } <= app_env


@pytest.mark.parametrize("file", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_parses(file: Path) -> None:
    documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    assert documents
    assert all(isinstance(d, dict) for d in documents)


def test_kubernetes_documents_are_well_formed() -> None:
    for document in k8s_documents():
        assert {"apiVersion", "kind"} <= set(document)
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"]


def test_the_kustomization_lists_existing_files() -> None:
    (kustomization,) = of_kind("Kustomization")
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource


@pytest.mark.parametrize(("file", "deployment"), deployments(), ids=lambda v: str(v)[:30])
def test_deployment_env_ports_probes_and_args(
    file: str, deployment: dict[str, Any], app_env: set[str]
) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    for container in our_containers(deployment):
        env = {e["name"] for e in container.get("env", [])}
        assert env <= app_env, f"{file}: variables the app never reads: {env - app_env}"
        assert {"BILLING_DATABASE_URL", "STRIPE_API_KEY", "BILLING_WEBHOOK_SECRETS"} <= env
        assert "command" not in container  # the image's ENTRYPOINT is `reconcile`
        port = check_serve_args(container["args"])
        assert port == serve_port()
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named == {"http": port}
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("liveness", "readiness")}
        assert probes["liveness"]["path"] == "/healthz"
        assert probes["readiness"]["path"] == "/readyz"
        for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
            assert named.get(probe["port"], probe["port"]) == port
            assert probe["path"] in app_paths()
    annotations = spec["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == serve_port()
    assert annotations["prometheus.io/path"] in app_paths()


@pytest.mark.parametrize(("file", "deployment"), deployments(), ids=lambda v: str(v)[:30])
def test_secret_references_resolve(file: str, deployment: dict[str, Any]) -> None:
    secrets = {s["metadata"]["name"]: s for s in of_kind("Secret")}
    for container in our_containers(deployment):
        for entry in container["env"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"], f"{file}: {ref}"


def test_the_service_targets_the_serve_port() -> None:
    (service,) = of_kind("Service")
    (deployment,) = of_kind("Deployment", "deployment.yaml")
    (container,) = our_containers(deployment)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert named.get(port["targetPort"], port["targetPort"]) == serve_port()
    assert (
        service["spec"]["selector"].items() <= deployment["spec"]["selector"]["matchLabels"].items()
    )


def test_the_configmap_holds_a_valid_desired_state(tmp_path: Path) -> None:
    (configmap,) = of_kind("ConfigMap")
    (deployment,) = of_kind("Deployment", "deployment.yaml")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    items = volumes["desired"]["configMap"]["items"]
    assert volumes["desired"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert {item["key"] for item in items} == set(configmap["data"])
    for item in items:
        target = tmp_path / "desired" / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(configmap["data"][item["key"]])
    result = load_desired(tmp_path / "desired")
    assert result.state is not None, [str(d) for d in result.diagnostics]


def test_the_secret_holds_no_real_credential() -> None:
    text = (KUBERNETES / "secret.yaml").read_text()
    assert not re.search(r"(sk|rk)_(live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9]{8,}", text)


def test_dockerfile() -> None:
    (base,) = dockerfile("FROM")
    assert base == "python:3.11-slim"
    (user,) = dockerfile("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert any(re.search(r"\bpip install \.", run) for run in dockerfile("RUN"))
    assert json.loads(dockerfile("ENTRYPOINT")[-1]) == ["reconcile"]
    port = check_serve_args(json.loads(dockerfile("CMD")[-1]))
    assert port == serve_port()
    assert dockerfile("EXPOSE") == [str(port)]
    (healthcheck,) = dockerfile("HEALTHCHECK")
    assert f"127.0.0.1:{port}/healthz" in healthcheck
    assert "/healthz" in app_paths()


def test_dockerfile_env_is_the_apps_or_the_interpreters(app_env: set[str]) -> None:
    extra = dockerfile_env() - app_env - INTERPRETER_VARIABLES
    assert not extra, f"variables the app never reads: {extra}"


def test_compose(app_env: set[str]) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    app = services["reconciler"]
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    env = set(app["environment"])
    assert env <= app_env, f"variables the app never reads: {env - app_env}"
    assert env >= {"BILLING_DATABASE_URL", "STRIPE_API_KEY"}
    assert app["environment"]["BILLING_DATABASE_URL"].startswith("postgresql://")
    port = check_serve_args(app["command"])
    assert port == serve_port()
    assert [str(p).rsplit(":", 1)[-1] for p in app["ports"]] == [str(port)]
    assert (DEPLOY / app["volumes"][0].split(":")[0]).resolve() == ROOT / "desired"
