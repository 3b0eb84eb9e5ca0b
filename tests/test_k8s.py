"""The Kubernetes manifests, checked without a cluster.

Every kustomization renders; every object passes kubernetes-validate --strict (unknown fields are
errors) for the oldest and newest Kubernetes we support; the ServiceMonitors pass prometheus-operator's
own schemas; the restricted security profile, probes, selectors, autoscaling metric names and Job
commands are consistent with each other and with what the code really serves and parses.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["overlays/cpu", "overlays/gpu-triton", "jobs/batch-synthesis",
                  "jobs/batch-synthesis-triton",
                  "jobs/retrain", "monitoring"]
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # 1.30: first with the preStop sleep action on by default

if shutil.which("kubectl") is None:
    pytest.skip("kubectl is not installed: the manifests cannot be rendered", allow_module_level=True)


def render(name: str) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(K8S / name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"kubectl kustomize k8s/{name} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for o in objects if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


# -- schema validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_passes_strict_schema_validation(rendered, version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    problems = []
    for name, objects in rendered.items():
        for obj in objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: checked against its own schema below
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                                f"{'.'.join(map(str, exc.path))}")
    assert not problems, "\n".join(problems)


def test_strict_validation_catches_a_misspelt_field(rendered) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = one(rendered["overlays/cpu"], "Deployment", "surrogate-api")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.fixture(scope="module")
def crd_validator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/tools installed (npm ci, pinned by package-lock.json) into a cache reused between runs."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed: the ServiceMonitor schema check needs them")
    tools = K8S / "tools"
    digest = hashlib.sha256((tools / "package-lock.json").read_bytes()).hexdigest()[:16]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = cache_root / "surrogate-faces" / f"k8s-tools-{digest}"
    if not (cache / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(tools / name, cache / name)
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=cache,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"npm ci in {cache} failed:\n{result.stderr[-2000:]}"
    shutil.copy(tools / "validate-crds.mjs", cache / "validate-crds.mjs")
    return cache


def test_service_monitors_match_the_prometheus_operator_schema(rendered, crd_validator: Path,
                                                               tmp_path: Path) -> None:
    files = []
    for name, objects in rendered.items():
        monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
        if monitors:
            files.append(tmp_path / f"{name.replace('/', '_')}.yaml")
            files[-1].write_text(yaml.safe_dump_all(monitors))
    assert len(files) == 2  # the cpu and the gpu-triton overlay
    result = subprocess.run(["node", "validate-crds.mjs", *map(str, files)], cwd=crd_validator,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 3, failed 0" in result.stdout
    # ...and the check is live: a malformed interval is refused.
    bad = tmp_path / "bad.yaml"
    bad.write_text(files[0].read_text().replace("interval: 15s", "interval: 15 seconds"))
    result = subprocess.run(["node", "validate-crds.mjs", str(bad)], cwd=crd_validator, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "interval" in result.stdout


# -- security and resources -------------------------------------------------------------------------

def test_every_pod_is_restricted_and_sized(rendered) -> None:
    problems = []
    for name, objects in rendered.items():
        for where, spec in pod_specs(objects):
            pod = spec.get("securityContext", {})
            seccomp = pod.get("seccompProfile", {}).get("type")
            if pod.get("runAsNonRoot") is not True or seccomp != "RuntimeDefault":
                problems.append(f"{name} {where}: pod needs runAsNonRoot and seccomp RuntimeDefault")
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{name} {where}: mounts a service-account token")
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for container in spec.get("initContainers", []) + spec["containers"]:
                sc = container.get("securityContext", {})
                if not (sc.get("allowPrivilegeEscalation") is False
                        and sc.get("readOnlyRootFilesystem") is True
                        and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                    problems.append(f"{name} {where}/{container['name']}: not a restricted container")
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(resources.get(part, {})):
                        problems.append(f"{name} {where}/{container['name']}: no cpu/memory {part}")
                for mount in container.get("volumeMounts", []):
                    if mount["name"] not in volumes:
                        problems.append(f"{name} {where}/{container['name']}: mounts unknown {mount['name']}")
                if not any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])) \
                        and container["name"] != "stage-models":
                    problems.append(f"{name} {where}/{container['name']}: no writable /tmp")
    assert not problems, "\n".join(problems)


def test_namespace_enforces_the_restricted_pod_security_standard(rendered) -> None:
    namespace = one(rendered["overlays/cpu"], "Namespace", "surrogate-faces")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_triton_runs_on_gpu_nodes_with_static_models(rendered) -> None:
    objects = rendered["overlays/gpu-triton"]
    spec = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    triton = spec["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert "--model-control-mode=none" in triton["args"]
    assert "--model-repository=/models" in triton["args"]
    api = one(objects, "Deployment", "surrogate-api")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["SURROGATE_BACKEND"] == "triton" and env["SURROGATE_TRITON_PROTOCOL"] == "grpc"
    host, port = env["SURROGATE_TRITON_URL"].split(":")
    service = one(objects, "Service", host)
    assert any(p["port"] == int(port) and p["name"] == "grpc" for p in service["spec"]["ports"])
    retrain = one(rendered["jobs/retrain"], "Job", "surrogate-retrain")["spec"]["template"]["spec"]
    assert retrain["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_service_env_is_what_the_service_reads(rendered) -> None:
    config = pytest.importorskip("service.config")
    known = {name for key in config.ENVIRONMENT_VARIABLES for name in key.split(" / ")}
    for overlay in ("overlays/cpu", "overlays/gpu-triton"):
        deployment = one(rendered[overlay], "Deployment", "surrogate-api")
        api = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in api["env"]}
        unknown = [k for k in env if k.startswith("SURROGATE_") and k not in known]
        assert not unknown, f"{overlay}: the service reads no {unknown}"
        config.ServiceConfig.from_env(env)  # every value is valid


# -- wiring: selectors, ports, probes, autoscaling ----------------------------------------------------

def test_selectors_ports_and_probes_line_up(rendered) -> None:
    for overlay in ("overlays/cpu", "overlays/gpu-triton"):
        objects = rendered[overlay]
        for deployment in find(objects, "Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["port"] in ports, (deployment["metadata"]["name"], probe)
            services = [s for s in find(objects, "Service")
                        if s["spec"]["selector"].items() <= labels.items()]
            assert len(services) == 1
            assert {p["targetPort"] for p in services[0]["spec"]["ports"]} <= set(ports)
            pdbs = [p for p in find(objects, "PodDisruptionBudget")
                    if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
            assert len(pdbs) == 1
            hpas = [h for h in find(objects, "HorizontalPodAutoscaler")
                    if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
            assert len(hpas) == 1 and "replicas" not in deployment["spec"]
            service_labels = services[0]["metadata"]["labels"].items()
            monitors = [m for m in find(objects, "ServiceMonitor")
                        if m["spec"]["selector"]["matchLabels"].items() <= service_labels]
            assert len(monitors) == 1
            port_names = {p["name"] for p in services[0]["spec"]["ports"]}
            assert monitors[0]["spec"]["endpoints"][0]["port"] in port_names


def test_custom_metrics_of_the_hpas_are_produced_by_the_adapter_rules(rendered) -> None:
    rules = yaml.safe_load(one(rendered["monitoring"], "ConfigMap", "surrogate-faces-adapter-rules")["data"]
                           ["config.yaml"])["rules"]
    exposed = {rule["name"]["as"] for rule in rules}
    hpas = find(rendered["overlays/gpu-triton"], "HorizontalPodAutoscaler")
    metrics = [m for hpa in hpas for m in hpa["spec"]["metrics"]]
    wanted = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    assert wanted == exposed == {"surrogate_api_requests_in_flight", "triton_avg_queue_time_us"}
    triton_hpa = one(rendered["overlays/gpu-triton"], "HorizontalPodAutoscaler", "triton")
    assert [m["type"] for m in triton_hpa["spec"]["metrics"]] == ["Pods"]  # queue time, as Triton's example
    api_hpa = one(rendered["overlays/cpu"], "HorizontalPodAutoscaler", "surrogate-api")
    assert {m["type"] for m in api_hpa["spec"]["metrics"]} == {"Resource", "Pods"}


def test_network_policies_deny_by_default_and_open_only_what_is_needed(rendered) -> None:
    for overlay in ("overlays/cpu", "overlays/gpu-triton"):
        objects = rendered[overlay]
        deny = one(objects, "NetworkPolicy", "default-deny")["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        api = one(objects, "NetworkPolicy", "surrogate-api")["spec"]
        sources = [s["namespaceSelector"]["matchLabels"] for s in api["ingress"][0]["from"]]
        assert {"surrogate-faces/client": "true"} in sources
        egress_ports = sorted(p["port"] for rule in api["egress"] for p in rule["ports"])
        expected = [53, 53] if overlay == "overlays/cpu" else [53, 53, 8000, 8001]
        assert egress_ports == expected


# -- Jobs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["jobs/batch-synthesis", "jobs/batch-synthesis-triton"])
def test_indexed_batch_job_command_parses_and_shards_match(rendered, name: str) -> None:
    job = one(rendered[name], "Job", "surrogate-batch-synthesis")
    assert job["spec"]["completionMode"] == "Indexed"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["SHARDS"]) == job["spec"]["completions"]
    assert container["command"][:2] == ["sh", "-c"]
    script = container["command"][2]
    expanded = script
    for key, value in {**env, "JOB_COMPLETION_INDEX": "3"}.items():
        expanded = expanded.replace("${" + key + "}", value).replace("$" + key, value)
    words = shlex.split(expanded)
    assert words[:5] == ["exec", "python", "-m", "surrogate.cli", "synthesize-batch"]
    from surrogate.synthesis_cli import synthesize_batch_command

    args = words[5:]
    args[0] = __file__  # ATTRIBUTES_FILE must exist for click; the option parsing is what is checked
    context = synthesize_batch_command.make_context("synthesize-batch", args)
    assert context.params["shard"] == f"3/{env['SHARDS']}"
    assert context.params["backend"] == ("triton" if "triton" in name else "embedded")


# -- scripts ------------------------------------------------------------------------------------------

def test_stage_models_stages_pinned_or_newest_versions(tmp_path: Path) -> None:
    script = K8S / "components" / "model-staging" / "stage-models.sh"
    repo = tmp_path / "repository"
    for model, versions in {"gan_generator": (1, 2), "recon": (1,)}.items():
        (repo / model).mkdir(parents=True)
        (repo / model / "config.pbtxt").write_text(f'name: "{model}"\n')
        (repo / model / "attributes.json").write_text("{}")
        for version in versions:
            (repo / model / str(version)).mkdir()
            (repo / model / str(version) / "model.onnx").write_text(f"{model} v{version}")
    (repo / "gan_generator" / ".tmp-3").mkdir()  # an export being written is never staged
    # the photoreal synthesis entry: OpenVINO IR, staged with its weights; skipped while its files are not placed
    (repo / "portrait_synthesis" / "2").mkdir(parents=True)
    (repo / "portrait_synthesis" / "config.pbtxt").write_text('name: "portrait_synthesis"\nbackend: "openvino"\n')
    for name in ("model.xml", "model.bin"):
        (repo / "portrait_synthesis" / "2" / name).write_text(name)

    def stage(pins: str) -> subprocess.CompletedProcess[str]:
        dest = tmp_path / f"models-{hashlib.md5(pins.encode()).hexdigest()[:6]}"
        env = {"PATH": os.environ["PATH"], "MODEL_SOURCE": str(repo), "MODEL_DEST": str(dest),
               "MODEL_VERSIONS": pins}
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
        result.dest = dest  # type: ignore[attr-defined]
        return result

    newest = stage("")
    assert newest.returncode == 0, newest.stderr
    staged = sorted(p.name for p in (newest.dest / "gan_generator").iterdir())
    assert staged == ["2", "attributes.json", "config.pbtxt"]
    assert sorted(p.name for p in (newest.dest / "portrait_synthesis" / "2").iterdir()) == ["model.bin", "model.xml"]
    shutil.rmtree(repo / "portrait_synthesis" / "2")
    unplaced = stage("")
    assert unplaced.returncode == 0 and "portrait_synthesis skipped" in unplaced.stderr, unplaced.stderr
    pinned = stage("gan_generator=1")
    assert (pinned.dest / "gan_generator" / "1" / "model.onnx").read_text() == "gan_generator v1"
    assert not (pinned.dest / "gan_generator" / "2").exists()
    for pins, message in (("gan_generator=7", "version 7 does not exist"), ("gan=1", "not in"),
                          ("recon=latest", "not name=<integer version>")):
        result = stage(pins)
        assert result.returncode == 1 and message in result.stderr, (pins, result.stderr)


# -- the real service answers the probes the manifests declare -----------------------------------------

def test_probe_paths_and_metrics_are_served_by_the_real_service(rendered, tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("bentoml")
    from service.demo_models import write_demo_repository
    from service.testing import running_service

    deployment = one(rendered["overlays/cpu"], "Deployment", "surrogate-api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The container's command line serves on the port the probes and the Service use.
    assert container["args"][0] == "serve" and int(container["args"][container["args"].index("--port") + 1]) \
        == ports["http"] == 3000
    repository = write_demo_repository(tmp_path / "models")
    env = {e["name"]: e["value"] for e in container["env"]}
    # BentoML puts unix sockets under TMPDIR: keep it as short as the pod's /tmp (pytest's is too long).
    short_tmp = tempfile.mkdtemp(prefix="sf-")
    env.update(SURROGATE_MODEL_REPOSITORY=str(repository), BENTOML_HOME=str(tmp_path / "bentoml"),
               HOME=str(tmp_path), TMPDIR=short_tmp, OMP_NUM_THREADS="1")
    # port 3000 may be taken on a shared machine: a free port; the paths are what is checked here
    try:
        with running_service(env, log_path=tmp_path / "serve.log") as url:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = container[probe]["httpGet"]["path"]
                assert httpx.get(url + path, timeout=5).status_code == 200, f"{probe} {path}"
            record = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0, "AU04": 0.0, "AU05": 0.0, "AU06": 0.0, "AU07": 0.0,
                      "AU12": 1.0, "AU23": 0.0, "gender": 0.5}
            httpx.post(url + "/synthesize", json={"records": [record]}, timeout=60)
            monitor = one(rendered["overlays/cpu"], "ServiceMonitor", "surrogate-api")
            metrics = httpx.get(url + monitor["spec"]["endpoints"][0]["path"], timeout=10).text
            rules = yaml.safe_load(one(rendered["monitoring"], "ConfigMap", "surrogate-faces-adapter-rules")
                                   ["data"]["config.yaml"])["rules"]
            api_series = rules[0]["seriesQuery"].split("{")[0]
            assert f"\n{api_series}{{" in metrics or metrics.startswith(f"{api_series}{{"), \
                f"the adapter rule reads {api_series}, which /metrics does not export"
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
