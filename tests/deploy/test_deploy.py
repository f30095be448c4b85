"""The Kubernetes manifests render, validate for every Kubernetes from 1.30 on, and agree with the service.

Fast and offline: ``kubectl kustomize`` (on the machine image) renders, kubernetes-validate's
bundled schemas check every object strictly (unknown fields are errors), and the service's port,
probe routes, traffic timeout and worker count are read from ``service.py`` and BentoML's own
defaults without importing the service. The image itself is built and started by
``./dev container`` (deploy/container-check.sh), not here.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.readme_snippets import README

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": KUBE / "base", "example": KUBE / "overlays" / "example"}
OLDEST_SUPPORTED = (1, 30)


def _render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests cannot be rendered here")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(KUSTOMIZATIONS[request.param])


@pytest.fixture(scope="module")
def example() -> dict[str, dict[str, Any]]:
    """The example overlay's objects by kind; kinds with several objects by kind/name."""
    objs: dict[str, dict[str, Any]] = {}
    for doc in _render(KUSTOMIZATIONS["example"]):
        several = doc["kind"] in ("Ingress", "PersistentVolumeClaim")
        objs[f"{doc['kind']}/{doc['metadata']['name']}" if several else doc["kind"]] = doc
    return objs


def _container(example: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = example["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _service_decorator() -> dict[str, Any]:
    """The literal keyword arguments of ``@bentoml.service(...)`` in service.py."""
    tree = ast.parse((ROOT / "service.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "bentoml.service":
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords
                    if kw.arg and kw.arg != "image"}
    raise AssertionError("service.py has no @bentoml.service(...)")


def _bentoml_file(relative: str) -> Path:
    spec = importlib.util.find_spec("bentoml")
    assert spec and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _service_port() -> int:
    http = _service_decorator().get("http", {})
    if "port" in http:
        return int(http["port"])
    defaults = yaml.safe_load(_bentoml_file("_internal/configuration/v2/default_configuration.yaml").read_text())
    return int(defaults["services"]["http"]["port"])


def _kubernetes_versions() -> list[str]:
    """1.30 and the newest release whose schemas kubernetes-validate bundles: the stable APIs used
    here exist in every release between (an API removed in between would be missing in the newest)."""
    from kubernetes_validate import utils

    newest = str(utils.major_minor(utils.latest_version()))
    oldest = ".".join(map(str, OLDEST_SUPPORTED))
    assert utils.major_minor(newest) > utils.major_minor(oldest)
    return [oldest, newest]


def test_every_object_validates_strictly_for_kubernetes_1_30_and_newer(rendered: list[dict[str, Any]]) -> None:
    from kubernetes_validate import utils

    versions = _kubernetes_versions()
    failures = []
    for version in versions:
        for doc in rendered:
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)
    assert {doc["kind"] for doc in rendered} >= {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
                                                 "PodDisruptionBudget", "PersistentVolumeClaim"}


def test_strict_validation_rejects_a_misspelt_field(rendered: list[dict[str, Any]]) -> None:
    """The check above can fail: a typo in a probe is an error, not silently ignored."""
    from kubernetes_validate import utils

    deployment = next(doc for doc in rendered if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(utils.ValidationError):
        utils.validate(broken, _kubernetes_versions()[0], strict=True)


def test_port_and_probes_match_what_the_service_serves(example: dict[str, dict[str, Any]]) -> None:
    container = _container(example)
    port = _service_port()
    (declared,) = container["ports"]
    assert declared["containerPort"] == port == 3000
    # BentoML itself serves the health routes; /readyz follows the service's __is_ready__.
    base_app = _bentoml_file("_internal/server/base_app.py").read_text()
    served = set(re.findall(r'join_paths\(path_prefix, "(/[a-z]+)"\)', base_app))
    assert {"/livez", "/readyz"} <= served
    assert "def __is_ready__" in (ROOT / "service.py").read_text()
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (port, declared["name"]), probe
    # A real load takes minutes: the startup probe must allow at least ten before liveness starts.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    # The Service and both Ingresses reach that port.
    service = example["Service"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port, declared["name"]) and service_port["port"] == port
    for name in ("Ingress/editx-api", "Ingress/editx-ui"):
        backend = example[name]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] == service_port["name"]
    annotations = example["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_selectors_and_targets_point_at_the_pods(example: dict[str, dict[str, Any]]) -> None:
    deployment = example["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], example["Service"]["spec"]["selector"],
                     example["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    target = example["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_one_gpu_and_one_worker_per_pod_and_graceful_shutdown(example: dict[str, dict[str, Any]]) -> None:
    container = _container(example)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    decorator = _service_decorator()
    assert decorator["workers"] == 1  # one model copy per pod: replicas scale, not workers
    # The grace period covers the preStop pause plus the longest request the service allows.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = example["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + decorator["traffic"]["timeout"]
    rollout = example["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0  # a rollout never drops below the ready pods it had


def test_volumes_weights_read_only_voices_shared_cache_per_pod(example: dict[str, dict[str, Any]]) -> None:
    container = _container(example)
    env = {e["name"]: e for e in container["env"]}
    pod = example["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    models = mounts[env["EDITX_MODEL_PATH"]["value"]]
    assert models.get("readOnly") is True and volumes[models["name"]]["persistentVolumeClaim"]["readOnly"] is True
    assert env["EDITX_MODEL_SOURCE"]["value"] == "local"

    voices = volumes[mounts[env["EDITX_VOICES_DIR"]["value"]]["name"]]
    claim = example[f"PersistentVolumeClaim/{voices['persistentVolumeClaim']['claimName']}"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    cache = volumes[mounts[env["EDITX_CACHE_DIR"]["value"]]["name"]]
    assert "emptyDir" in cache  # per pod: derived data, rebuilt on a miss

    assert env["EDITX_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"]  # never a literal key
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0


def test_every_editx_variable_in_the_manifests_is_documented(rendered: list[dict[str, Any]]) -> None:
    documented = set(re.findall(r"^\| `(EDITX_[A-Z_]+)` \|", README.read_text(), flags=re.M))
    used = set(re.findall(r"\bEDITX_[A-Z_]+\b", yaml.safe_dump_all(rendered)))
    assert used, "the manifests set no EDITX_* variable"
    assert used - documented == set(), "set in deploy/kubernetes but missing from the README table"


def test_the_autoscaler_reads_a_metric_the_service_serves(example: dict[str, dict[str, Any]]) -> None:
    (metric,) = example["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    defined = {m for path in [*ROOT.glob("api/**/*.py"), *ROOT.glob("runners/**/*.py")]
               for m in re.findall(r'\b(?:Gauge|Counter|Histogram)\(\s*"([a-z_]+)"', path.read_text())}
    if not defined:
        pytest.skip("the service defines no Prometheus metric of its own yet (editx_queue_depth comes with the scheduler)")
    assert name in defined, f"{name} is not a metric the service defines ({sorted(defined)})"
    rules = yaml.safe_load((KUBE / "prometheus-adapter-rules.yaml").read_text())
    assert any(name in rule["seriesQuery"] for rule in rules["rules"]["custom"])


def test_the_podman_version_of_the_deployment_changes_only_what_a_single_machine_lacks(tmp_path: Path) -> None:
    """What ``./dev container`` starts with ``podman kube play`` is the manifest, minus GPU, claims and Secret."""
    from deploy.kube_play import for_podman

    rendered = _render(KUSTOMIZATIONS["base"])
    original = next(d for d in rendered if d["kind"] == "Deployment")
    copy = list(yaml.safe_load_all(yaml.safe_dump_all(rendered)))  # for_podman edits in place
    played = for_podman(copy, "localhost/editx-check:1", tmp_path, 4321)
    (before,), (after,) = original["spec"]["template"]["spec"]["containers"], played["spec"]["template"]["spec"]["containers"]
    assert "resources" not in after and after["image"] == "localhost/editx-check:1"
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "securityContext", "volumeMounts"):
        assert after[key] == before[key], key
    assert played["spec"]["template"]["spec"]["securityContext"] == original["spec"]["template"]["spec"]["securityContext"]
    assert after["ports"][0] | {"hostPort": 0, "hostIP": ""} == before["ports"][0] | {"hostPort": 0, "hostIP": ""}
    volumes = {v["name"]: v for v in played["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["hostPath"]["path"] == str(tmp_path / "models")
    assert all("hostPath" in v for v in volumes.values())
    env = {e["name"]: e for e in after["env"]}
    assert "valueFrom" not in env["EDITX_API_KEYS"] and env["EDITX_API_KEYS"]["value"]
