"""etc/kubernetes as shipped: every document validates against Kubernetes' schemas
(kubernetes-validate, strict) or KEDA's (tests/keda_schema.py), both variants rendered the
way kustomize renders them, and the manifests agree with each other and with the server:
probe paths and ports, drain time, the ScaledObject's target and metrics, the settings."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sesame_server.app import create_app
from sesame_server.config import load_settings
from sesame_server.runtime import EXTENSION
from tests.keda_schema import SCALED_OBJECT

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "etc" / "kubernetes"
VARIANTS = ("base", "gpu")
KUBERNETES_VERSION = "1.37.0"
# Variables the Deployment sets that are not the server's settings but a library's.
LIBRARY_VARIABLES = {"HF_HOME"}
POD_NAME = "sesame-tts-7d9f8b6c4-x2x9q"


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as far as these patches use it: maps merge, lists of named items
    (containers, env, volumes, volumeMounts) merge by name, other lists are replaced.
    test_kubectl_kustomize_renders_the_same checks it against kustomize where kubectl is."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    named = isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(item, dict) and "name" in item for item in base + patch)
    if named:
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((n for n, old in enumerate(merged) if old["name"] == item["name"]), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = merge(merged[at], item)
        return merged
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize directory` gives for these kustomizations (resources,
    strategic-merge patches, images)."""
    kustomization = load(directory / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else load(path)
    for patch_ref in kustomization.get("patches", []):
        for patch in load(directory / patch_ref["path"]):
            at = next(n for n, doc in enumerate(docs) if (doc["kind"], doc["metadata"]["name"])
                      == (patch["kind"], patch["metadata"]["name"]))
            docs[at] = merge(docs[at], patch)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


RENDERED = {variant: render(MANIFESTS / variant) for variant in VARIANTS}


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def validate(doc: dict[str, Any]) -> None:
    """Raise on a document Kubernetes (or KEDA) would refuse; a kind neither knows fails too."""
    if doc["kind"] == "ScaledObject":
        jsonschema.Draft202012Validator(SCALED_OBJECT).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def setting_names() -> set[str]:
    """Every variable config.py reads (load_settings ignores unknown ones: a typo is silent)."""
    source = (REPO / "sesame_server" / "config.py").read_text()
    return set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]*)"', source))


def port_number(spec_port: int | str, ports: list[dict[str, Any]]) -> int:
    if isinstance(spec_port, int):
        return spec_port
    return next(port["containerPort"] for port in ports if port.get("name") == spec_port)


def scaled_metrics(docs: list[dict[str, Any]]) -> set[str]:
    queries = [trigger["metadata"]["query"] for trigger in one(docs, "ScaledObject")["spec"]["triggers"]]
    return {name for query in queries for name in re.findall(r"\b(sesame_tts_[a-z0-9_]+)\b", query)}


# -- schemas -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_document_validates(variant):
    docs = RENDERED[variant]
    assert {doc["kind"] for doc in docs} >= {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                                             "ScaledObject"}
    for doc in docs:
        validate(doc)


def test_every_file_is_applied_by_a_kustomization():
    """A manifest no kustomization names is never applied, nor validated by the test above."""
    used = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        spec = load(kustomization)[0]
        assert spec["kind"] == "Kustomization" and spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        used.add(kustomization)
        for name in [*spec.get("resources", []), *(patch["path"] for patch in spec.get("patches", []))]:
            path = (kustomization.parent / name).resolve()
            assert path.exists(), f"{kustomization} names {name}, which is not there"
            used.add(path / "kustomization.yaml" if path.is_dir() else path)
    assert set(MANIFESTS.rglob("*.yaml")) == used


def test_the_validators_refuse_a_broken_manifest():
    deployment = copy.deepcopy(one(RENDERED["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(one(RENDERED["base"], "ScaledObject"))
    del scaled["spec"]["triggers"][0]["metadata"]["threshold"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    scaled = copy.deepcopy(one(RENDERED["base"], "ScaledObject"))
    scaled["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: render() is not "
                    "compared with kustomize itself")
@pytest.mark.parametrize("variant", VARIANTS)
def test_kubectl_kustomize_renders_the_same(variant):
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / variant)], capture_output=True, text=True,
                         timeout=60, check=True).stdout

    def canonical(value: Any) -> Any:  # kustomize reorders keys and named items
        if isinstance(value, dict):
            return {key: canonical(item) for key, item in value.items()}
        if isinstance(value, list):
            items = [canonical(item) for item in value]
            if all(isinstance(item, dict) and "name" in item for item in items):
                items.sort(key=lambda item: item["name"])
            return items
        return value

    def keyed(docs):
        return {(doc["kind"], doc["metadata"]["name"]): canonical(doc) for doc in docs}

    assert keyed(yaml.safe_load_all(out)) == keyed(RENDERED[variant])


# -- what the documents must agree on -------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_ports_and_selectors_line_up(variant):
    docs = RENDERED[variant]
    deployment, service, config = one(docs, "Deployment"), one(docs, "Service"), one(docs, "ConfigMap")
    server = container(docs)
    container_port = port_number("http", server["ports"])
    assert container_port == int(config["data"]["PORT"])  # where the server listens
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        assert server[probe]["httpGet"]["path"] == path, probe
        assert port_number(server[probe]["httpGet"]["port"], server["ports"]) == container_port, probe
    (service_port,) = service["spec"]["ports"]
    assert port_number(service_port["targetPort"], server["ports"]) == container_port
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container_port


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_grace_period_outlasts_the_pause_and_the_drain(variant):
    docs = RENDERED[variant]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    pause = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(one(docs, "ConfigMap")["data"]["DRAIN_SECONDS"])
    # The grace period counts from preStop; SIGTERM (the drain) only comes after it.
    assert pod["terminationGracePeriodSeconds"] > pause + drain


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_scaled_object_scales_this_deployment(variant):
    docs = RENDERED[variant]
    target = one(docs, "ScaledObject")["spec"]["scaleTargetRef"]
    assert target["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == ("apps/v1", "Deployment")
    assert scaled_metrics(docs) >= {"sesame_tts_queue_depth", "sesame_tts_busy_seconds_total"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variable_is_a_real_setting(variant):
    docs = RENDERED[variant]
    names = setting_names()
    assert set(one(docs, "ConfigMap")["data"]) <= names
    assert {env["name"] for env in container(docs)["env"]} <= names | LIBRARY_VARIABLES
    assert {"NODE_NAME", "API_KEY", "VOICES_DIR", "DRAIN_SECONDS", "MAX_QUEUE_DEPTH"} <= names


@pytest.mark.parametrize("variant", VARIANTS)
def test_voices_and_node_name_come_from_the_cluster(variant):
    docs = RENDERED[variant]
    server, pod = container(docs), one(docs, "Deployment")["spec"]["template"]["spec"]
    env = {item["name"]: item for item in server["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "API_KEY"
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v
                 and v["persistentVolumeClaim"]["claimName"] == "sesame-tts-voices")
    mount = next(m for m in server["volumeMounts"] if m["name"] == claim["name"])
    assert mount["mountPath"] == one(docs, "ConfigMap")["data"]["VOICES_DIR"]
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "sesame-tts-voices")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica mounts it


def test_the_gpu_variant_asks_for_a_gpu_and_the_torch_backend():
    docs = RENDERED["gpu"]
    assert one(docs, "ConfigMap")["data"]["BACKEND"] == "csm-torch"
    assert container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "nvidia.com/gpu" not in container(RENDERED["base"])["resources"].get("limits", {})


# -- a server configured by the ConfigMap ----------------------------------------------------

def test_a_server_with_the_configmap_answers_the_probes_and_exports_the_scaled_metrics(tmp_path):
    docs = RENDERED["base"]
    environ = {**one(docs, "ConfigMap")["data"], "API_KEY": "k8s-test-key", "NODE_NAME": POD_NAME,
               "CACHE_DIR": str(tmp_path / "cache"), "VOICES_DIR": str(tmp_path / "voices")}
    for variant in VARIANTS:  # every variant's values parse (BACKEND, numbers, ALLOWED_HOSTS)
        load_settings({**environ, **one(RENDERED[variant], "ConfigMap")["data"]}, env_file=None)
    settings = load_settings(environ, env_file=None)
    app = create_app(settings)  # the ConfigMap's backend (piper), for real
    rt = app.extensions[EXTENSION]
    try:
        assert rt.engine.wait_ready(60)
        client = app.test_client()
        kubelet = {"Host": f"10.244.1.7:{settings.port}"}  # probes name the pod IP
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container(docs)[probe]["httpGet"]["path"]
            response = client.get(path, headers=kubelet)  # no key: probes carry none
            assert response.status_code == 200, (probe, response.get_json())
            assert response.headers["X-Served-By"] == POD_NAME
        for name in settings.allowed_hosts:  # the Service's names pass the Host check
            assert client.get("/ready", headers={"Host": name}).status_code == 200, name
        response = client.get("/metrics", headers={**kubelet, "Authorization": "Bearer k8s-test-key"})
        assert response.status_code == 200
        exported = {sample.name for family in text_string_to_metric_families(response.get_data(as_text=True))
                    for sample in family.samples}
        assert scaled_metrics(docs) <= exported
    finally:
        rt.close()
