"""deploy/k8s (kustomize) and deploy/compose.yaml, checked offline: every Kubernetes manifest against the
Kubernetes schemas (kubernetes-validate, strict: no unknown fields), KEDA's ScaledObjects against a schema of the
fields they use (KEDA's CRDs are not in kubernetes-validate), every environment variable and ConfigMap or
Secret key against genq's settings, every genq command line against genq's own parser, and each ScaledObject's
Redis lists against the lists kombu really fills.

The overlays are rendered in Python (the kustomization fields these files use: resources, namespace,
images); where kubectl is installed, `kubectl kustomize` renders them too and must give the same objects.
"""
from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from genq.broker import Publisher, broker_connection, make_celery, queue_name
from genq.cli.main import _parser
from genq.lifecycle import PRIORITY_MAX, PRIORITY_MIN, broker_priority
from genq.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images"}
CLUSTER_SCOPED = {"Namespace"}
K8S_VERSION = kubernetes_validate.latest_version()
REDIS_URL = os.environ.get("GENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # as in tests/conftest.py

# The fields of keda.sh/v1alpha1 ScaledObject these manifests use (KEDA 2.x), unknown fields refused.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"}, "labels": {"type": "object"}}},
        "spec": {"type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
                 "properties": {
                     "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                       "apiVersion": {"type": "string"}}},
                     "minReplicaCount": {"type": "integer", "minimum": 0},
                     "maxReplicaCount": {"type": "integer", "minimum": 1},
                     "pollingInterval": {"type": "integer", "minimum": 1},
                     "cooldownPeriod": {"type": "integer", "minimum": 0},
                     "triggers": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                         "properties": {
                             "type": {"const": "redis"},
                             "metadata": {
                                 "type": "object", "required": ["address", "listName", "listLength"],
                                 "additionalProperties": False,
                                 # KEDA's redis scaler takes every value as a string
                                 "properties": {k: {"type": "string"} for k in (
                                     "address", "databaseIndex", "listName", "listLength",
                                     "activationListLength", "enableTLS")}},
                             "authenticationRef": {"type": "object", "required": ["name"]}}}}}},
    },
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _render(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` makes, for the fields these kustomizations use."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{folder}: the Python rendering does not know {unknown}"
    out: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        out += _render(path) if path.is_dir() else [copy.deepcopy(d) for d in _documents(path)]
    for obj in out:
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for image in kustomization.get("images", []):
            for container in _containers(obj):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return out


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = _pod_spec(obj)
    if pod is not None:
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module", params=OVERLAYS, ids=[p.name for p in OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _generation_workers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in _by_kind(objects, "Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def test_there_are_cpu_and_gpu_overlays() -> None:
    assert {p.name for p in OVERLAYS} == {"cpu", "gpu"}


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid_against_its_schema(path: Path) -> None:
    for doc in _documents(path):
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_rendered_object_is_valid_and_names_are_unique(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        if obj["kind"] == "ScaledObject":
            jsonschema.validate(obj, SCALED_OBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    keys = [_key(o) for o in rendered]
    assert len(keys) == len(set(keys))
    assert {o["kind"] for o in rendered} == {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service",
                                             "HorizontalPodAutoscaler", "ScaledObject"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: the Python rendering alone")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_kubectl_kustomize_renders_the_same_objects(overlay: Path) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True)
    theirs = {_key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {_key(o): o for o in _render(overlay)}
    assert theirs == ours


def test_every_environment_variable_and_config_key_is_a_genq_setting(rendered: list[dict[str, Any]]) -> None:
    sources = {("configMapRef", o["metadata"]["name"]): set(o.get("data", {})) for o in _by_kind(rendered, "ConfigMap")}
    sources |= {("secretRef", o["metadata"]["name"]): set(o.get("stringData", {})) | set(o.get("data", {}))
                for o in _by_kind(rendered, "Secret")}
    for obj in rendered:
        for container in _containers(obj):
            names = {e["name"] for e in container.get("env", [])}
            for ref in container.get("envFrom", []):
                (kind, target), = ref.items()
                assert (kind, target["name"]) in sources, f"{obj['metadata']['name']}: no {kind} {target['name']}"
                names |= sources[(kind, target["name"])]
            assert names and names <= set(ENV_VARS), (obj["metadata"]["name"], names - set(ENV_VARS))


def test_the_configuration_is_one_genq_accepts(rendered: list[dict[str, Any]]) -> None:
    env = {**_by_kind(rendered, "ConfigMap")[0]["data"], **_by_kind(rendered, "Secret")[0]["stringData"]}
    for worker in _generation_workers(rendered):
        container = worker["spec"]["template"]["spec"]["containers"][0]
        settings = Settings.from_env({**env, **{e["name"]: e["value"] for e in container.get("env", [])}})
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.broker_url.startswith("redis://")


def _genq_command_lines(obj: dict[str, Any]) -> Iterator[list[str]]:
    for container in _containers(obj):
        if "command" in container:  # the init containers' wait: `sh -c "until genq check; ..."`
            assert container["command"][:2] == ["sh", "-c"]
            script = container["command"][2]
            yield shlex.split(script.split("until ", 1)[1].split(";", 1)[0])[1:]
        else:  # the image's entrypoint is genq
            yield container["args"]


def test_every_container_runs_a_genq_command_its_parser_accepts(rendered: list[dict[str, Any]]) -> None:
    commands = [args for obj in rendered for args in _genq_command_lines(obj)]
    for args in commands:
        _parser().parse_args(args)
    assert ["db", "upgrade"] in commands and ["api"] in commands and ["check"] in commands
    assert ["worker", "--queues", "webhooks"] in commands


def test_the_api_is_probed_on_healthz_served_and_autoscaled(rendered: list[dict[str, Any]]) -> None:
    api = next(d for d in _by_kind(rendered, "Deployment") if d["metadata"]["name"] == "genq-api")
    pod = api["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = int(_by_kind(rendered, "ConfigMap")[0]["data"]["GENQ_PORT"])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "livenessProbe" in container
    assert pod["initContainers"][0]["command"][-1].startswith("until genq check")
    service = _by_kind(rendered, "Service")[0]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = _by_kind(rendered, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "genq-api"}
    assert container["resources"]["requests"]["cpu"]  # a CPU utilization target needs a request


def test_every_deployment_selects_its_own_pods(rendered: list[dict[str, Any]]) -> None:
    for deployment in _by_kind(rendered, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]


def test_generation_workers_outlast_a_job_when_stopped_and_gpu_ones_ask_for_a_gpu(
        rendered: list[dict[str, Any]], request: pytest.FixtureRequest) -> None:
    job_timeout = int(_by_kind(rendered, "ConfigMap")[0]["data"]["GENQ_JOB_TIMEOUT"])
    gpu = request.node.callspec.id == "gpu"
    workers = _generation_workers(rendered)
    assert workers
    for worker in workers:
        pod = worker["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > job_timeout
        container = pod["containers"][0]
        assert container["args"][:2] == ["worker", "--models"] and container["args"][3:] == ["--queues", "models"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if gpu:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert pod["nodeSelector"] and env["GENQ_DEVICE"] == "cuda"
        else:
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
            assert "nodeSelector" not in pod and "GENQ_DEVICE" not in env


def _redis_lists(model: str) -> list[str]:
    """The Redis lists kombu keeps for the model's queue: one per priority step of genq's broker options."""
    from kombu.transport.redis import Channel

    _, options = broker_connection(Settings.from_env({"GENQ_BROKER_URL": "redis://redis:6379/0"}))
    queue = queue_name(model)
    return [f"{queue}{Channel.sep}{p}" if p else queue for p in options["priority_steps"]]


def test_each_model_has_a_scaled_object_on_every_redis_list_of_its_queue(rendered: list[dict[str, Any]]) -> None:
    workers = {w["metadata"]["name"]: w for w in _generation_workers(rendered)}
    scaled = _by_kind(rendered, "ScaledObject")
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scaled) == sorted(workers)
    broker_host = _by_kind(rendered, "Secret")[0]["stringData"]["GENQ_BROKER_URL"].split("//")[1].split("/")[0]
    for s in scaled:
        worker = workers[s["spec"]["scaleTargetRef"]["name"]]
        model = worker["spec"]["template"]["spec"]["containers"][0]["args"][2]
        assert s["spec"]["minReplicaCount"] == 0 and worker["spec"]["replicas"] == 0  # scale to zero
        triggers = [t["metadata"] for t in s["spec"]["triggers"]]
        assert sorted(t["listName"] for t in triggers) == sorted(_redis_lists(model))
        assert {t["address"] for t in triggers} == {broker_host}
        assert {t["activationListLength"] for t in triggers} == {"0"}


def test_every_job_priority_lands_on_a_list_the_scaled_object_watches(redis_key_prefix: str) -> None:
    """Against a real Redis: a job published at each priority is found on one of the watched lists."""
    import redis

    model = "k8s-check"
    prefix = f"{redis_key_prefix}k8s:"
    settings = Settings.from_env({"GENQ_BROKER_URL": REDIS_URL, "GENQ_BROKER_KEY_PREFIX": prefix})
    app = make_celery(settings)
    publisher = Publisher(app)
    client = redis.Redis.from_url(REDIS_URL)
    watched = [prefix + name for name in _redis_lists(model)]
    try:
        for priority in range(PRIORITY_MIN, PRIORITY_MAX + 1):
            before = [client.llen(name) for name in watched]
            publisher.publish(f"job-{priority}", model, priority)
            after = [client.llen(name) for name in watched]
            grew = [n for n, b, a in zip(watched, before, after, strict=True) if a == b + 1]
            assert len(grew) == 1, (priority, broker_priority(priority))
    finally:
        app.close()
        client.close()


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def _compose_genq_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _compose()["services"].items() if str(s.get("image", "")).startswith("genq")}


def test_compose_genq_services_name_only_settings_and_run_commands_genq_accepts() -> None:
    services = _compose_genq_services()
    assert {"migrate", "api", "worker", "webhooks"} <= set(services)
    for name, service in services.items():
        env = service.get("environment", {})
        assert set(env) <= set(ENV_VARS), (name, set(env) - set(ENV_VARS))
        _parser().parse_args(service["command"])
        Settings.from_env({k: str(v) for k, v in env.items()})
