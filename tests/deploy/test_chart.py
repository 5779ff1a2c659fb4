"""The Helm chart: lints strictly, renders manifests that validate against Kubernetes' schemas, and keeps its
contract (probes, autoscaling on the ingestion queue, network isolation, no secrets in ConfigMaps, non-root
containers with limits, values mapping one to one onto ``Settings``) for each of its values files.

Rendering is offline through helm-python-sdk (Helm's Go SDK, no helm binary, no cluster).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from ragserve.settings import Settings

CHART_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "ragserve"
RELEASE = "ragserve"
NAMESPACE = "ragserve"
KUBE_VERSION = "1.30.0"
VALUES_FILES = {
    "default": None,
    "production": CHART_DIR / "ci" / "values-production.yaml",
    "minimal": CHART_DIR / "ci" / "values-minimal.yaml",
}
# Custom resources with no schema in kubernetes-validate: test_custom_resources checks their structure.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}
# Settings the chart already sets whose fields are being added to ragserve.settings in other issues.
PENDING_SETTINGS = {
    ("queue", "backend"),
    ("queue", "ingest_queue"),
    ("queue", "rabbitmq_url"),
    ("redis", "url"),
    ("observability", "otlp_endpoint"),
}
SECRET_VARIABLE_MARKERS = ("POSTGRES_URL", "RABBITMQ_URL", "REDIS__URL", "API_KEY", "PROVIDERS", "PASSWORD")


@dataclass(frozen=True)
class Rendered:
    """The manifests of one rendering, parsed."""

    values: dict[str, Any]
    manifests: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def secret_data(self, name: str) -> dict[str, str]:
        data = self.get("Secret", name).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}


def load_values(variant: str) -> dict[str, Any]:
    path = VALUES_FILES[variant]
    return {} if path is None else yaml.safe_load(path.read_text(encoding="utf-8"))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        effective = chart.merge_values(values)
    manifests = [
        doc
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Rendered(values=effective, manifests=manifests)


@pytest.fixture(scope="module", params=list(VALUES_FILES))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(variant: str) -> Rendered:
    return render(load_values(variant))


def pod_templates(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in rendered.manifests:
        if manifest["kind"] in {"Deployment", "StatefulSet"}:
            yield f"{manifest['kind']}/{manifest['metadata']['name']}", manifest["spec"]["template"]["spec"]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return found


def component_selector(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ragserve",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


# --- lint and schema validation ------------------------------------------------------------------------


def test_lint_is_clean_in_strict_mode(variant: str) -> None:
    report = helm.lint(
        CHART_DIR, load_values(variant), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


def test_manifests_validate_against_kubernetes_schemas(rendered: Rendered) -> None:
    failures = []
    for manifest in rendered.manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert failures == []


def test_custom_resources_are_well_formed(rendered: Rendered) -> None:
    for manifest in rendered.manifests:
        if (manifest["apiVersion"], manifest["kind"]) not in CUSTOM_KINDS:
            continue
        assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
        assert manifest["metadata"]["name"].startswith(RELEASE)
        if manifest["kind"] == "ScaledObject":
            spec = manifest["spec"]
            assert spec["scaleTargetRef"]["name"]
            assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            for trigger in spec["triggers"]:
                assert set(trigger) == {"type", "metadata", "authenticationRef"}
                assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA wants string metadata"
        else:
            for ref in manifest["spec"]["secretTargetRef"]:
                assert set(ref) == {"parameter", "name", "key"}


# --- the API --------------------------------------------------------------------------------------------


def test_api_probes_health_and_readiness(rendered: Rendered) -> None:
    api = container(rendered.get("Deployment", RELEASE)["spec"]["template"]["spec"], "api")
    port_names = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_names[api[probe]["httpGet"]["port"]] == rendered.values["settings"]["server"]["port"]


def test_api_serves_on_all_interfaces(rendered: Rendered) -> None:
    api = container(rendered.get("Deployment", RELEASE)["spec"]["template"]["spec"], "api")
    assert api["command"] == ["ragserve"]
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    service = rendered.get("Service", RELEASE)
    assert service["spec"]["selector"] == component_selector("api")


def test_api_has_read_only_root_with_writable_tmp(rendered: Rendered) -> None:
    pod = rendered.get("Deployment", RELEASE)["spec"]["template"]["spec"]
    api = container(pod, "api")
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert mounts["/data"] == "data"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_api_spreads_over_nodes(rendered: Rendered) -> None:
    pod = rendered.get("Deployment", RELEASE)["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == component_selector("api")


@pytest.mark.parametrize("variant_name", ["default", "production"])
def test_api_autoscales_on_cpu_with_a_disruption_budget(variant_name: str) -> None:
    rendered = render(load_values(variant_name))
    hpa = rendered.get("HorizontalPodAutoscaler", RELEASE)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] > 1
    assert "replicas" not in rendered.get("Deployment", RELEASE)["spec"], "the HPA owns the replica count"
    pdb = rendered.get("PodDisruptionBudget", RELEASE)
    assert pdb["spec"]["selector"]["matchLabels"] == component_selector("api")


def test_production_ingress_routes_to_the_api_service() -> None:
    rendered = render(load_values("production"))
    ingress = rendered.get("Ingress", RELEASE)
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]


def test_minimal_keeps_sqlite_on_a_volume_with_one_pod() -> None:
    rendered = render(load_values("minimal"))
    deployment = rendered.get("Deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == RELEASE
    assert rendered.get("PersistentVolumeClaim", RELEASE)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    assert rendered.get("ConfigMap", RELEASE)["data"]["RAGSERVE_STORE__BACKEND"] == "sqlite"
    kinds = {(m["kind"], m["metadata"]["name"]) for m in rendered.manifests}
    for bundled in ("postgresql", "redis", "rabbitmq", "worker"):
        assert not any(name == f"{RELEASE}-{bundled}" for kind, name in kinds if kind != "NetworkPolicy")


# --- the worker and KEDA --------------------------------------------------------------------------------


def test_production_scales_workers_on_the_ingestion_queue() -> None:
    rendered = render(load_values("production"))
    worker = rendered.get("Deployment", f"{RELEASE}-worker")
    assert container(worker["spec"]["template"]["spec"], "worker")["args"] == ["worker"]
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    scaled = rendered.get("ScaledObject", f"{RELEASE}-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "ragserve.ingest"
    assert trigger["metadata"]["queueName"] == rendered.values["settings"]["queue"]["ingest_queue"]
    auth = rendered.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref == {"parameter": "host", "name": "ragserve-external", "key": "RAGSERVE_QUEUE__RABBITMQ_URL"}


def test_scaled_object_follows_a_renamed_queue() -> None:
    values = merge(load_values("production"), {"settings": {"queue": {"ingest_queue": "tenant-a.ingest"}}})
    rendered = render(values)
    (trigger,) = rendered.get("ScaledObject", f"{RELEASE}-worker")["spec"]["triggers"]
    assert trigger["metadata"]["queueName"] == "tenant-a.ingest"
    assert rendered.get("ConfigMap", RELEASE)["data"]["RAGSERVE_QUEUE__INGEST_QUEUE"] == "tenant-a.ingest"


def test_worker_runs_only_with_the_rabbitmq_queue(rendered: Rendered) -> None:
    names = {m["metadata"]["name"] for m in rendered.of_kind("Deployment")}
    has_worker = f"{RELEASE}-worker" in names
    assert has_worker == (rendered.values["settings"]["queue"]["backend"] == "rabbitmq")
    if not rendered.values["worker"]["keda"]["enabled"]:
        assert rendered.of_kind("ScaledObject") == []


# --- configuration and secrets ---------------------------------------------------------------------------


def test_no_secret_values_in_config_maps(rendered: Rendered) -> None:
    secrets = [
        value for s in rendered.of_kind("Secret") for value in rendered.secret_data(s["metadata"]["name"]).values()
    ]
    for config_map in rendered.of_kind("ConfigMap"):
        for key, value in config_map["data"].items():
            assert not any(marker in key for marker in SECRET_VARIABLE_MARKERS), key
            assert not any(secret in value for secret in secrets if len(secret) >= 8), key


def test_secret_settings_land_only_in_the_secret() -> None:
    sentinel = "s3cr3t-sentinel"
    values = merge(
        load_values("production"),
        {
            "secretSettings": {
                "store": {"postgres_url": f"postgresql://u:{sentinel}-pg@db:5432/rag"},
                "queue": {"rabbitmq_url": f"amqp://u:{sentinel}-mq@mq:5672"},
                "redis": {"url": f"redis://:{sentinel}-redis@cache:6379/0"},
            },
            "settings": {
                "llm": {
                    "providers": [
                        {"name": "p", "kind": "openai_compat", "base_url": "https://x/v1", "api_key": f"{sentinel}-key"}
                    ]
                }
            },
        },
    )
    rendered = render(values)
    secret = rendered.secret_data(RELEASE)
    assert secret["RAGSERVE_STORE__POSTGRES_URL"].endswith(f"{sentinel}-pg@db:5432/rag")
    assert f"{sentinel}-mq" in secret["RAGSERVE_QUEUE__RABBITMQ_URL"]
    assert f"{sentinel}-redis" in secret["RAGSERVE_REDIS__URL"]
    assert f"{sentinel}-key" in secret["RAGSERVE_LLM__PROVIDERS"]
    config = yaml.safe_dump([m for m in rendered.manifests if m["kind"] != "Secret"])
    assert sentinel not in config


def test_bundled_dependencies_share_generated_passwords() -> None:
    rendered = render(load_values("default"))
    passwords = rendered.secret_data(f"{RELEASE}-dependencies")
    settings = rendered.secret_data(RELEASE)
    assert len(passwords["postgres-password"]) == 32
    assert settings["RAGSERVE_STORE__POSTGRES_URL"] == (
        f"postgresql://ragserve:{passwords['postgres-password']}@{RELEASE}-postgresql:5432/ragserve"
    )
    assert settings["RAGSERVE_QUEUE__RABBITMQ_URL"] == (
        f"amqp://ragserve:{passwords['rabbitmq-password']}@{RELEASE}-rabbitmq:5672"
    )
    assert settings["RAGSERVE_REDIS__URL"] == f"redis://:{passwords['redis-password']}@{RELEASE}-redis:6379/0"
    postgres = rendered.get("StatefulSet", f"{RELEASE}-postgresql")["spec"]["template"]["spec"]
    assert container(postgres, "postgresql")["image"] == "pgvector/pgvector:pg17"
    env = {e["name"]: e for e in container(postgres, "postgresql")["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-dependencies",
        "key": "postgres-password",
    }


def test_settings_values_become_nested_environment_variables() -> None:
    values = {"settings": {"retrieval": {"hybrid_alpha": 0.7}, "limits": {"max_upload_bytes": 104857600}}}
    data = render(values).get("ConfigMap", RELEASE)["data"]
    assert data["RAGSERVE_RETRIEVAL__HYBRID_ALPHA"] == "0.7"
    assert data["RAGSERVE_LIMITS__MAX_UPLOAD_BYTES"] == "104857600", "large integers must not turn into 1.048576e+08"
    assert data["RAGSERVE_LLM__BREAKER__FAILURE_THRESHOLD"] == "5"
    assert data["RAGSERVE_DATA_DIR"] == "/data"
    assert "RAGSERVE_EMBEDDING__CACHE_DIR" not in data, "a null setting is left to the application default"


def model_field(path: tuple[str, ...]) -> Any:
    """The annotation of the Settings field at ``path``, or None where Settings has no such field."""
    model: Any = Settings
    annotation: Any = None
    for key in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
            return None
        annotation = model.model_fields[key].annotation
        model = annotation
    return annotation


def leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_values_keys_are_settings_fields(rendered: Rendered) -> None:
    merged = rendered.values
    unknown = [
        path
        for tree in (merged["settings"], merged["secretSettings"])
        for path, _ in leaves(tree)
        if model_field(path) is None and path not in PENDING_SETTINGS
    ]
    assert unknown == [], "values keys must name ragserve.settings fields (snake_case, same nesting)"


def test_rendered_environment_round_trips_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(merge(load_values("minimal"), {"settings": {"retrieval": {"hybrid_alpha": 0.65}}}))
    env = {**rendered.get("ConfigMap", RELEASE)["data"], **rendered.secret_data(RELEASE)}
    for name in [n for n in os.environ if n.startswith("RAGSERVE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    checked = 0
    for path, expected in leaves(rendered.values["settings"]):
        if expected is None or model_field(path) is None:
            continue
        actual: Any = settings
        for key in path:
            actual = getattr(actual, key)
        if isinstance(actual, SecretStr):
            actual = actual.get_secret_value()
        elif isinstance(actual, Path):
            actual = str(actual)
        elif isinstance(actual, list):
            actual = [item.model_dump(exclude_defaults=True, mode="json") for item in actual]
        assert actual == expected, path
        checked += 1
    assert settings.retrieval.hybrid_alpha == 0.65
    assert checked >= 40


# --- isolation and least privilege ------------------------------------------------------------------------


def test_network_policies_isolate_the_dependencies(rendered: Rendered) -> None:
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("NetworkPolicy")}
    assert f"{RELEASE}-egress" in policies
    clients = [component_selector("api")]
    if rendered.values["settings"]["queue"]["backend"] == "rabbitmq":
        clients.append(component_selector("worker"))
    for dependency in ("postgresql", "redis", "rabbitmq"):
        if not rendered.values[dependency]["enabled"]:
            assert f"{RELEASE}-{dependency}" not in policies
            continue
        policy = policies[f"{RELEASE}-{dependency}"]
        assert policy["spec"]["podSelector"]["matchLabels"] == component_selector(dependency)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        assert [peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer] == clients
        assert all(set(peer) == {"podSelector"} for peer in rule["from"]), "no namespace-wide access"


def test_egress_policy_allows_dns_and_the_dependencies(rendered: Rendered) -> None:
    policy = rendered.get("NetworkPolicy", f"{RELEASE}-egress")
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert "api" in expression["values"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    rules = policy["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in rules[0]["ports"]
    reachable = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in rules
        for peer in rule.get("to", [])
        if "podSelector" in peer
    }
    expected = {d for d in ("postgresql", "redis", "rabbitmq") if rendered.values[d]["enabled"]}
    assert reachable == expected


def test_keda_may_reach_the_bundled_rabbitmq() -> None:
    values = merge(load_values("default"), {"worker": {"keda": {"enabled": True}}})
    policy = render(values).get("NetworkPolicy", f"{RELEASE}-rabbitmq")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers


def test_containers_run_as_non_root_with_resource_limits(rendered: Rendered) -> None:
    for name, pod in pod_templates(rendered):
        pod_context = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, name
        for c in pod["containers"]:
            context = {**pod_context, **c.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{name}/{c['name']}"
            assert context.get("runAsUser", 0) != 0, f"{name}/{c['name']}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), f"{name}/{c['name']}"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), f"{name}/{c['name']}"


def test_service_account_has_no_token_and_no_permissions(rendered: Rendered) -> None:
    account = rendered.get("ServiceAccount", RELEASE)
    assert account["automountServiceAccountToken"] is False
    assert rendered.get("Role", RELEASE)["rules"] == []
    binding = rendered.get("RoleBinding", RELEASE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    for name, pod in pod_templates(rendered):
        if name.endswith((RELEASE, "-worker")):
            assert pod["serviceAccountName"] == RELEASE, name


# --- the self-hosted LLM --------------------------------------------------------------------------------


def test_self_hosted_llm_runs_on_a_gpu_and_becomes_the_first_provider() -> None:
    values = merge(
        load_values("default"),
        {
            "llm": {"enabled": True, "nodeSelector": {"gpu": "h100"}},
            "settings": {
                "llm": {"providers": [{"name": "cloud", "kind": "openai_compat", "base_url": "https://x/v1"}]}
            },
        },
    )
    rendered = render(values)
    failures = []
    for manifest in rendered.manifests:
        if (manifest["apiVersion"], manifest["kind"]) not in CUSTOM_KINDS:
            try:
                kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message}")
    assert failures == []
    pod = rendered.get("Deployment", f"{RELEASE}-llm")["spec"]["template"]["spec"]
    vllm = container(pod, "vllm")
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    service = rendered.get("Service", f"{RELEASE}-llm")
    providers = yaml.safe_load(rendered.secret_data(RELEASE)["RAGSERVE_LLM__PROVIDERS"])
    assert [p["name"] for p in providers] == ["vllm", "cloud"]
    port = service["spec"]["ports"][0]["port"]
    assert providers[0]["base_url"] == f"http://{RELEASE}-llm:{port}/v1"
    assert providers[0]["model"] == vllm["args"][vllm["args"].index("--served-model-name") + 1]
    assert f"{RELEASE}-llm" in {p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")}


# --- values that cannot work fail the render -------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"api": {"replicaCount": 2}}, "settings.store.backend sqlite"),
        ({"api": {"autoscaling": {"enabled": True}}}, "settings.store.backend sqlite"),
        ({"settings": {"store": {"backend": "postgres"}}}, "settings.store.backend is postgres"),
        ({"settings": {"queue": {"backend": "rabbitmq"}}}, "settings.queue.backend is rabbitmq"),
        ({"worker": {"keda": {"enabled": True}}}, "worker.keda.enabled needs settings.queue.backend rabbitmq"),
    ],
)
def test_unworkable_values_fail_with_a_message_naming_them(override: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(merge(load_values("minimal"), override))
