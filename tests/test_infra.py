"""Cluster infrastructure (infra/): container images, KubeRay manifests, the Ray cluster launcher, MLflow server.

Nothing here talks to Kubernetes, a cloud or Docker. The manifests are rendered the way `kubectl apply -k` would
(a small kustomize for the features infra/k8s uses, checked against `kubectl kustomize` where kubectl exists),
validated against JSON Schemas of the Kubernetes/KubeRay fields they use (tests/infra_k8s_schema.py), and checked
for consistency with the repository: entrypoints, configs, images, Python/Ray/torch versions, the Serve config.
The slow test runs the pretraining job through `ray start --head` + `ray job submit` on loopback.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra_k8s_schema import JSON6902_PATCH, KUSTOMIZATION, SCHEMAS

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
OVERLAYS = ("cpu", "gpu")
DOCKERFILES = {"gpu": INFRA / "docker" / "Dockerfile", "cpu": INFRA / "docker" / "Dockerfile.cpu"}
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
BIN = Path(sys.executable).parent


def load_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render_module():
    spec = importlib.util.spec_from_file_location("render_rayservice", K8S / "render_rayservice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- a small kustomize: resources, namespace, labels, images, JSON 6902 and strategic-merge patches ----------------

def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _pointer(path: str) -> list:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_json6902(doc: dict, ops: list) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            if op["op"] == "add":
                node.append(op["value"]) if last == "-" else node.insert(int(last), op["value"])
            elif op["op"] == "replace":
                node[int(last)] = op["value"]
            else:
                del node[int(last)]
        else:
            if op["op"] == "replace" and last not in node:
                raise KeyError(f"replace of missing {op['path']}")
            if op["op"] == "remove":
                del node[last]
            else:
                node[last] = op["value"]
    return doc


def _set_images(node, images: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    name, _, tag = c.get("image", "").partition(":")
                    if name in images:
                        new = images[name]
                        c["image"] = f"{new.get('newName', name)}:{new.get('newTag', tag)}".rstrip(":")
            _set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, images)


def kustomize(directory: Path) -> list[dict]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        docs += kustomize(path) if path.is_dir() else load_docs(path)
    for patch in k.get("patches", []):
        content = load_docs(directory / patch["path"])
        target = patch.get("target")
        matched = 0
        for i, d in enumerate(docs):
            if target:
                hit = d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
            else:
                hit = d["kind"] == content[0]["kind"] and d["metadata"]["name"] == content[0]["metadata"]["name"]
            if hit:
                docs[i] = apply_json6902(d, content[0]) if target else _merge(d, content[0])
                matched += 1
        assert matched == 1, f"{directory / patch['path']}: patch matched {matched} objects"
    images = {i["name"]: i for i in k.get("images", [])}
    for d in docs:
        _set_images(d, images)
        if k.get("namespace") and d["kind"] != "Namespace":
            d["metadata"]["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def cluster_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    return {"RayCluster": [spec], "RayJob": [spec.get("rayClusterSpec")],
            "RayService": [spec.get("rayClusterConfig")]}.get(doc["kind"], [])


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(group name, pod template) of every pod a manifest creates."""
    if doc["kind"] in RAY_KINDS:
        out = []
        for spec in cluster_specs(doc):
            out.append(("head", spec["headGroupSpec"]["template"]))
            out += [(w["groupName"], w["template"]) for w in spec.get("workerGroupSpecs", [])]
        return out
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [(doc["metadata"]["name"], doc["spec"]["template"])]
    return []


def quantity(value) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out + "$")


def dockerignored(rel: str) -> bool:
    """Whether .dockerignore keeps a repository path out of the build context: a rule matching the path or one of
    its parent directories applies, and the last matching rule wins (`!` re-includes)."""
    ignored = False
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), _docker_pattern(line.lstrip("!").strip("/"))
        if any(pattern.match(p) for p in prefixes):
            ignored = not negate
    return ignored


# -- every file parses ------------------------------------------------------------------------------------------

def all_infra_yaml() -> list[Path]:
    return sorted(INFRA.rglob("*.yaml")) + sorted((REPO / "configs").glob("pretrain_cluster_*.yaml"))


def test_every_infra_yaml_parses():
    files = all_infra_yaml()
    assert len(files) >= 20, files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"


def test_kustomizations_and_patches_are_well_formed():
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        jsonschema.validate(k, KUSTOMIZATION)
        for entry in k.get("resources", []):
            assert (kfile.parent / entry).exists(), f"{kfile}: resource {entry} missing"
        for patch in k.get("patches", []):
            content = load_docs(kfile.parent / patch["path"])
            if "target" in patch:
                jsonschema.validate(content[0], JSON6902_PATCH)
    listed = {(K8S / "base" / r).resolve() for r in yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
              ["resources"]}
    on_disk = {p.resolve() for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == listed, f"base/ files not in its kustomization: {on_disk - listed}"


# -- schemas: kinds, apiVersions and the fields used ----------------------------------------------------------------

def test_base_manifests_validate_against_k8s_and_kuberay_schemas():
    docs = [d for p in sorted((K8S / "base").glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_docs(p)]
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert {("ray.io/v1", k) for k in RAY_KINDS} <= kinds
    for d in docs:
        schema = SCHEMAS.get((d["apiVersion"], d["kind"]))
        assert schema, f"unexpected apiVersion/kind {d['apiVersion']}/{d['kind']} ({d['metadata'].get('name')})"
        jsonschema.validate(d, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(rendered, overlay):
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("RayCluster", "momu-interactive"), ("RayJob", "momu-pretrain"), ("RayJob", "momu-embed"),
            ("RayService", "momu-serve"), ("Deployment", "mlflow"), ("Service", "mlflow"),
            ("StatefulSet", "momu-postgres"), ("Ingress", "momu-serve")} <= names
    assert len(names) == len(docs), "duplicate kind/name"
    for d in docs:
        jsonschema.validate(d, SCHEMAS[(d["apiVersion"], d["kind"])])
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "momu"


def test_schemas_reject_what_kuberay_rejects(rendered):
    job = one(rendered["gpu"], "RayJob", "momu-pretrain")
    schema = SCHEMAS[("ray.io/v1", "RayJob")]
    bad = []
    d = copy.deepcopy(job)
    d["spec"]["rayClusterSpec"]["workerGroupSpec"] = d["spec"]["rayClusterSpec"].pop("workerGroupSpecs")
    bad.append(d)  # misspelt field
    d = copy.deepcopy(job)
    d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    bad.append(d)  # rayStartParams is map[string]string
    d = copy.deepcopy(job)
    d["spec"]["submissionMode"] = "K8sMode"
    bad.append(d)  # not an enum value
    d = copy.deepcopy(job)
    d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "memory"] = "26 GB"
    bad.append(d)  # not a resource.Quantity
    d = copy.deepcopy(job)
    d["apiVersion"] = "ray.io/v1alpha1"
    bad.append(d)
    for d in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(d, schema)


def test_mini_kustomize_agrees_with_kubectl(rendered):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed; the in-test kustomize renders the overlays")
    for overlay in OVERLAYS:
        out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
        theirs = sorted(load_docs_text(out.stdout), key=key)
        ours = sorted(rendered[overlay], key=key)
        assert [key(d) for d in theirs] == [key(d) for d in ours]
        for a, b in zip(theirs, ours):
            assert a == b, f"{overlay}: {key(a)} differs between kubectl kustomize and the test's render"


def load_docs_text(text: str) -> list:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# -- entrypoints, configs, resources -------------------------------------------------------------------------------

JOB_COMMANDS = {"jobs/pretrain.py": "pretrain", "jobs/embed.py": "embed"}


def entrypoint(job: dict) -> tuple[str, str, list[str]]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[2] == "--config", argv
    return argv[1], argv[3], argv[4:]


def job_config(job: dict):
    """The validated config a RayJob's entrypoint runs: its flags parsed by the real `momu` CLI, the way
    jobs/<job>.py hands them to momu.cli.main."""
    from momu.cli import build_parser, config_from_args
    from momu.embed.config import EmbedConfig
    from momu.pretrain.config import PretrainConfig

    argv = shlex.split(job["spec"]["entrypoint"])
    command = JOB_COMMANDS[argv[1]]
    args = build_parser().parse_args([command, *argv[2:]])
    return config_from_args({"pretrain": PretrainConfig, "embed": EmbedConfig}[command], args)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_entrypoints_and_configs_exist_in_the_image(rendered, overlay):
    expected = {"momu-pretrain": ("jobs/pretrain.py", f"configs/pretrain_cluster_{overlay}.yaml"),
                "momu-embed": ("jobs/embed.py", "configs/embed_moleculenet.yaml")}
    for job in by_kind(rendered[overlay], "RayJob"):
        script, config, _ = entrypoint(job)
        assert (script, config) == expected[job["metadata"]["name"]]
        for rel in (script, config):
            assert (REPO / rel).is_file(), f"{job['metadata']['name']}: {rel} does not exist in the repository"
            assert not dockerignored(rel), f"{rel} is excluded from the image by .dockerignore"
            assert any(f"COPY --chown=1000:100 {rel.split('/')[0]}/" in f.read_text() for f in DOCKERFILES.values())
        job_config(job)  # every flag is a field of the job's config and the values validate


def _pod_resources(template: dict) -> dict:
    return template["spec"]["containers"][0].get("resources", {}).get("limits", {})


def _worker_totals(job: dict) -> tuple[float, float, float]:
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    cpus = sum(w["replicas"] * quantity(_pod_resources(w["template"])["cpu"]) for w in workers)
    gpus = sum(w["replicas"] * quantity(_pod_resources(w["template"]).get("nvidia.com/gpu", 0)) for w in workers)
    per_pod_cpu = min(quantity(_pod_resources(w["template"])["cpu"]) for w in workers)
    return cpus, gpus, per_pod_cpu


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pretrain_config_fits_its_rayjob(rendered, overlay):
    job = one(rendered[overlay], "RayJob", "momu-pretrain")
    assert not entrypoint(job)[2], "the cluster pretraining configs need no flags"
    cfg = job_config(job)
    for path in cfg.data_paths:  # the driver reads them in the head pod: inside the image or on the shared volume
        assert path.startswith("/mnt/shared/") or ((REPO / path).is_file() and not dockerignored(path)), path
    for name, value in (("storage_path", cfg.storage_path), ("text_cache_dir", cfg.text_cache_dir)):
        assert "://" in value or value.startswith("/mnt/shared/"), f"{name} {value} is not shared storage"
    cpus, gpus, per_pod_cpu = _worker_totals(job)
    need_cpu = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    assert per_pod_cpu >= cfg.scaling.cpus_per_worker, "a Train worker does not fit in a worker pod"
    assert cpus >= need_cpu + 1, f"{need_cpu} CPUs for Train workers + Ray Data, the job has {cpus}"
    if overlay == "gpu":
        assert cfg.scaling.use_gpu and cfg.resolved_text_mode() == "finetune"
        assert gpus >= cfg.scaling.num_workers * (cfg.scaling.gpus_per_worker or 1)
    else:
        assert not cfg.scaling.use_gpu and gpus == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pretrain_embed_and_serve_hand_over_through_mlflow_and_the_shared_volume(rendered, overlay):
    docs = rendered[overlay]
    pretrain = job_config(one(docs, "RayJob", "momu-pretrain"))
    embed_job = one(docs, "RayJob", "momu-embed")
    embed = job_config(embed_job)
    serve = yaml.safe_load(one(docs, "RayService", "momu-serve")["spec"]["serveConfigV2"])
    serve_args = serve["applications"][0]["args"]
    # The model pretraining registers is the one embedding and serving load; the embedding job's output is the
    # Serve app's index, on the shared volume every pod mounts.
    assert embed.model == serve_args["model"] and embed.model.startswith(f"models:/{pretrain.register_model_name}/")
    assert embed.output_dir == serve_args["molecule_index"] and embed.output_dir.startswith("/mnt/shared/")
    assert embed.mode == "molecules" and all(p.startswith("/mnt/shared/") for p in embed.inputs)
    cpus, gpus, _ = _worker_totals(embed_job)
    assert cpus >= embed.model_actors * embed.cpus_per_actor + embed.featurize_cpus
    if overlay == "gpu":
        assert embed.model_actors * (embed.gpus_per_actor or 1) <= gpus and embed.gpus_per_actor == 1
    else:
        assert gpus == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_pods_have_node_selector_tolerations_and_whole_gpus(rendered, overlay):
    gpu_groups = 0
    for d in rendered[overlay]:
        for group, template in pod_templates(d):
            res = template["spec"]["containers"][0].get("resources", {})
            gpu = res.get("limits", {}).get("nvidia.com/gpu")
            if gpu is None:
                continue
            gpu_groups += 1
            assert res["requests"].get("nvidia.com/gpu") == gpu and int(gpu) == quantity(gpu) >= 1
            assert template["spec"]["nodeSelector"], f"{d['metadata']['name']}/{group}"
            assert any(t["key"] == "nvidia.com/gpu" for t in template["spec"]["tolerations"])
            assert template["spec"]["containers"][0]["image"].endswith("-cu126")
    assert gpu_groups == (3 if overlay == "gpu" else 0)
    if overlay == "gpu":
        interactive = one(rendered["gpu"], "RayCluster", "momu-interactive")["spec"]
        gpu_group = [w for w in interactive["workerGroupSpecs"] if w["groupName"] == "gpu"][0]
        assert interactive["enableInTreeAutoscaling"] and gpu_group["minReplicas"] < gpu_group["maxReplicas"]


def test_every_pod_mounts_only_declared_volumes_and_runs_as_non_root(rendered):
    for overlay, docs in rendered.items():
        pvcs = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
        for d in docs:
            for group, template in pod_templates(d):
                spec = template["spec"]
                volumes = {v["name"]: v for v in spec.get("volumes", [])}
                for c in spec["containers"]:
                    for m in c.get("volumeMounts", []):
                        assert m["name"] in volumes or any(
                            t["metadata"]["name"] == m["name"] for t in d["spec"].get("volumeClaimTemplates", []))
                for v in volumes.values():
                    if "persistentVolumeClaim" in v:
                        assert v["persistentVolumeClaim"]["claimName"] in pvcs
                assert spec["securityContext"]["runAsNonRoot"] is True, f"{overlay} {d['metadata']['name']}/{group}"
                assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in spec["containers"])


# -- images and versions ---------------------------------------------------------------------------------------------

def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), re.M))


def constraints(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_dockerfiles_agree_with_pyproject_and_constraints():
    from packaging.specifiers import SpecifierSet

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    extras = pyproject["project"]["optional-dependencies"]
    image_pins = constraints(INFRA / "docker" / "constraints.txt")
    dev_pins = constraints(REPO / "requirements" / "constraints-cpu.txt")
    assert image_pins["torch"] == dev_pins["torch"]
    versions = set()
    for variant, path in DOCKERFILES.items():
        text = path.read_text()
        args = dockerfile_args(path)
        versions.add(args["PYTHON_VERSION"])
        assert args["PYTHON_VERSION"] + ".0" in requires, f"{path}: Python {args['PYTHON_VERSION']} vs {requires}"
        assert args["TORCH_VERSION"] == image_pins["torch"]
        assert args["TORCH_INDEX_URL"].endswith("/cu126" if variant == "gpu" else "/cpu")
        # The package is installed the way pyproject.toml declares it: `pip install .[extra]` from the copied
        # project, with the image constraints; every extra named exists.
        install = re.search(r'pip install -c infra/docker/constraints\.txt "\.\[([\w,]+)\]"', text)
        assert install, f"{path}: package install command not found"
        assert set(install.group(1).split(",")) <= set(extras)
        before_install = text[: install.start()]
        for needed in ("pyproject.toml", pyproject["project"]["readme"], "platform/", "infra/docker/constraints.txt"):
            assert re.search(rf"^COPY .*{re.escape(needed)}", before_install, re.M), f"{path}: {needed} not copied"
        for src in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
            for rel in src.split():
                assert (REPO / rel).exists() and not dockerignored(rel.rstrip("/")), f"{path}: COPY {rel}"
        user = re.findall(r"^USER (\S+)$", text, re.M)
        assert user and user[-1].split(":")[0] not in ("0", "root")
        assert re.search(r"^WORKDIR /app$", text, re.M) and "PYTHONPATH=/app" in text
    assert len(versions) == 1
    gpu_base = dockerfile_args(DOCKERFILES["gpu"])["CUDA_BASE"]
    assert re.fullmatch(r"nvidia/cuda:12\.6\.\d+-runtime-ubuntu\d+\.\d+", gpu_base), gpu_base


def test_no_secrets_in_images_or_manifests():
    secretish = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|CREDENTIALS?)(_|$)", re.I)
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            if line.startswith(("ENV", "ARG")) or line.startswith(" ") and "=" in line:
                names = re.findall(r"(\w+)=", line.removeprefix("ENV").removeprefix("ARG"))
                assert not any(secretish.search(n) for n in names), f"{path}: {line}"
    for rel in (".venv", ".git", "runs/x/model.safetensors", ".env", "serving/.env", "id.pem", "a/b/id.key",
                ".ray/auth_token", "data/other.csv", "tests", "platform/momu/__pycache__/x.pyc"):
        assert dockerignored(rel), f".dockerignore lets {rel} into the image"
    for rel in ("platform/momu/config.py", "jobs", "configs", "serving/app.py", "data/sample/chebi20",
                "pyproject.toml", "README.md", "infra/docker/constraints.txt"):
        assert not dockerignored(rel), rel
    for path in K8S.rglob("*.yaml"):
        for d in load_docs(path):
            if isinstance(d, dict):
                assert d.get("kind") != "Secret", f"{path} embeds a Secret; reference it instead"
                if d.get("kind") == "ConfigMap":
                    assert not any(secretish.search(k) for k in d.get("data", {})), path


def test_ray_version_is_the_same_everywhere(rendered):
    import ray

    pin = constraints(INFRA / "docker" / "constraints.txt")["ray"]
    assert pin == ray.__version__, f"images pin ray {pin}, the tested environment has {ray.__version__}"
    for docs in rendered.values():
        for d in docs:
            for spec in cluster_specs(d):
                assert spec["rayVersion"] == pin, d["metadata"]["name"]
    launcher = yaml.safe_load((INFRA / "cluster" / "aws.yaml").read_text())
    python = dockerfile_args(DOCKERFILES["gpu"])["PYTHON_VERSION"].replace(".", "")
    assert launcher["docker"]["image"] == f"rayproject/ray:{pin}-py{python}-gpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_built_here_or_pinned(rendered, overlay):
    readme = (INFRA / "README.md").read_text()
    for d in rendered[overlay]:
        for group, template in pod_templates(d):
            image = template["spec"]["containers"][0]["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{d['metadata']['name']}/{group}: {image} is not pinned"
            if name.endswith("/momu"):
                variant = "cpu" if tag.endswith("-cpu") else "gpu"
                assert tag.endswith("-cu126") or variant == "cpu"
                if overlay == "cpu" or d["metadata"]["name"] == "mlflow":
                    assert variant == "cpu", f"{overlay}: {d['metadata']['name']} should run the CPU image"
                dockerfile = DOCKERFILES[variant].relative_to(REPO)
                assert f"docker build -f {dockerfile} -t $REGISTRY/momu:{tag} ." in readme, (dockerfile, tag)


# -- security defaults --------------------------------------------------------------------------------------------

def test_only_serve_is_exposed_and_everything_else_is_cluster_internal(rendered):
    for overlay, docs in rendered.items():
        for svc in by_kind(docs, "Service"):
            assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        for d in docs:
            for spec in cluster_specs(d):
                head = spec["headGroupSpec"]
                assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
                assert spec["authOptions"]["mode"] == "token", f"{d['metadata']['name']}: Ray token auth off"
        ingresses = by_kind(docs, "Ingress")
        assert len(ingresses) == 1
        serve = one(docs, "RayService", "momu-serve")
        port = yaml.safe_load(serve["spec"]["serveConfigV2"])["http_options"]["port"]
        backends = [p["backend"]["service"] for r in ingresses[0]["spec"]["rules"] for p in r["http"]["paths"]]
        assert backends == [{"name": "momu-serve-serve-svc", "port": {"number": port}}]


def test_secrets_are_referenced_and_documented(rendered):
    readme = (INFRA / "README.md").read_text()
    referenced = set()
    for docs in rendered.values():
        for d in docs:
            for _, template in pod_templates(d):
                for c in template["spec"]["containers"]:
                    for e in c.get("env", []):
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        if ref:
                            referenced.add(ref["name"])
                            assert f"create secret generic {ref['name']} --from-literal={ref['key']}=" in readme
                    for e in c.get("envFrom", []):
                        if "secretRef" in e:
                            referenced.add(e["secretRef"]["name"])
                            assert e["secretRef"].get("optional") is True  # credentials may come from roles
    assert referenced == {"momu-postgres", "momu-mlflow-db", "momu-object-store", "momu-serve-api-key"}
    for name in referenced:
        assert name in readme


def test_mlflow_server_postgres_backend_object_store_and_reachable_by_jobs(rendered):
    from mlflow.server.security_utils import is_allowed_host_header
    from urllib.parse import urlparse

    for overlay, docs in rendered.items():
        deploy = one(docs, "Deployment", "mlflow")
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["mlflow", "server"] and "--serve-artifacts" in container["args"]
        env = {e["name"]: e for e in container["env"]}
        backend = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
        assert backend == {"name": "momu-mlflow-db", "key": "backend-store-uri"}
        pg = one(docs, "StatefulSet", "momu-postgres")["spec"]["template"]["spec"]["containers"][0]
        assert pg["image"].startswith("postgres:")
        config = one(docs, "ConfigMap", "momu-env")["data"]
        artifacts = config["MLFLOW_ARTIFACTS_DESTINATION"]
        assert artifacts.startswith("s3://") if overlay == "gpu" else artifacts.startswith("/mnt/shared/")
        # Jobs find the server through MLFLOW_TRACKING_URI: it names the Service, its namespace and port, and the
        # server accepts that Host header (MLflow's DNS-rebinding check, with MLflow's own matcher).
        uri = urlparse(config["MLFLOW_TRACKING_URI"])
        svc = one(docs, "Service", "mlflow")
        assert uri.hostname == f"mlflow.{svc['metadata']['namespace']}.svc.cluster.local"
        assert uri.port == svc["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"]
        allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
        for host in (uri.netloc, "localhost:5000", "mlflow:5000"):
            assert is_allowed_host_header(allowed, host), host
        assert not is_allowed_host_header(allowed, "evil.example.com")
        for d in docs:  # every Ray pod gets the tracking URI
            for group, template in pod_templates(d):
                if d["kind"] in RAY_KINDS:
                    refs = [e.get("configMapRef", {}).get("name") for e in template["spec"]["containers"][0]["envFrom"]]
                    assert "momu-env" in refs, f"{d['metadata']['name']}/{group}"


# -- the RayService is rendered from serving/config.yaml ------------------------------------------------------------

def test_rayservice_manifest_is_a_fresh_render_of_the_serve_config():
    render = render_module()
    committed = (K8S / "base" / "rayservice.yaml").read_text()
    assert committed == render.render(), "stale: run python infra/k8s/render_rayservice.py"


def test_rayservice_serve_config_equals_the_local_one_except_cluster_fields():
    render = render_module()
    local = yaml.safe_load((REPO / "serving" / "config.yaml").read_text())
    manifest = load_docs(K8S / "base" / "rayservice.yaml")[0]
    cluster = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    overrides = render.load_overrides(K8S / "serve-cluster.yaml")
    # Put the local values back where the cluster differs; what remains must be identical to serving/config.yaml.
    restored = copy.deepcopy(cluster)
    restored["http_options"]["host"] = local.get("http_options", {}).get("host", "0.0.0.0")
    for app, local_app in zip(restored["applications"], local["applications"]):
        for key in overrides.get(app["name"], {}):
            if key in local_app.get("args", {}):
                app["args"][key] = local_app["args"][key]
            else:
                del app["args"][key]
    assert restored == local
    assert cluster["http_options"]["host"] == "0.0.0.0"
    assert set(overrides) == {"momu"} and set(overrides["momu"]) <= {"model", "molecule_index", "text_index",
                                                                       "api_key_env", "device"}
    app_args = cluster["applications"][0]["args"]
    assert app_args["api_key_env"] == "MOMU_API_KEY" and app_args["model"].startswith("models:/momu-cluster/")
    envs = [e for _, t in pod_templates(manifest) for e in t["spec"]["containers"][0].get("env", [])]
    assert {e["name"] for e in envs} == {"MOMU_API_KEY"} and len(envs) == 2


def test_render_checks_the_serve_config(tmp_path):
    render = render_module()
    local = yaml.safe_load((REPO / "serving" / "config.yaml").read_text())
    bad = copy.deepcopy(local)
    bad["applications"][0]["deployments"][0]["max_ongoing_requests"] = -1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(render.RenderError, match="not a valid Ray Serve config"):
        render.render(tmp_path / "bad.yaml")
    typo = tmp_path / "overrides.yaml"
    typo.write_text("applications:\n  momu:\n    args:\n      modle: models:/x/1\n")
    with pytest.raises(render.RenderError, match="modle"):
        render.render(REPO / "serving" / "config.yaml", overrides=typo)
    local_dir = copy.deepcopy(local)
    local_dir["applications"][0]["runtime_env"] = {"working_dir": "."}
    (tmp_path / "wd.yaml").write_text(yaml.safe_dump(local_dir))
    with pytest.raises(render.RenderError, match="working_dir"):
        render.render(tmp_path / "wd.yaml")
    out = tmp_path / "rs.yaml"
    assert render.main(["--output", str(out)]) == 0 and render.main(["--output", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "# hand edit\n")
    assert render.main(["--output", str(out), "--check"]) == 1


# -- Ray cluster launcher -------------------------------------------------------------------------------------------

def test_cluster_launcher_config_validates_with_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "cluster" / "aws.yaml").read_text())
    validate_config(config)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert config["provider"]["type"] == "aws"
    gpu_types = {n: t for n, t in config["available_node_types"].items()
                 if re.match(r"(g4dn|g5|g6|g6e|p3|p4d|p5)\.", t["node_config"]["InstanceType"])}
    assert gpu_types and all(t["max_workers"] > t["min_workers"] == 0 for t in gpu_types.values())
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    setup = " ".join(config["setup_commands"])
    assert "download.pytorch.org/whl/cu126" in setup and "torch==2.13.0" in setup
    assert 'pip install -c ~/momu/infra/docker/constraints.txt -e "$HOME/momu[cluster,index]"' in setup
    assert config["file_mounts"]["~/momu"] == "." and ".venv" in config["rsync_exclude"]
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert "-v /mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert "/mnt/shared" in config["initialization_commands"][0]
    typo = copy.deepcopy(config)
    typo["available_node_types"]["ray.worker.gpu"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(typo)


def test_readme_walks_from_zero_to_jobs_and_endpoint():
    readme = (INFRA / "README.md").read_text()
    for needed in ("kubectl apply -k infra/k8s/overlays/gpu", "kubectl apply -k infra/k8s/overlays/cpu",
                   "ray up infra/cluster/aws.yaml", "ray job submit", "ray down infra/cluster/aws.yaml",
                   "port-forward svc/mlflow 5000:5000", "port-forward svc/momu-interactive-head-svc 8265:8265",
                   "python infra/k8s/render_rayservice.py", "x-api-key", "RAY_AUTH_MODE=token",
                   "kubectl -n momu get rayjob momu-pretrain", "kubectl -n momu get rayjob momu-embed",
                   "kubectl -n momu get rayservice momu-serve", "helm install kuberay-operator"):
        assert needed in readme, needed


# -- ray start --head + ray job submit, on loopback -----------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (parent pid, process group, state, start time) of every process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    return out


def _descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of the processes started from `root` (the GCS, raylet, dashboard, and the raylet's
    workers, which run in their own sessions but remain its children), plus anything in root's process group.
    The start time keeps a recycled pid from being taken for one of them."""
    procs, found, frontier = _processes(), set(), {root}
    while frontier:
        frontier = {pid for pid, p in procs.items() if p[0] in frontier} - found
        found |= frontier
    found |= {pid for pid, p in procs.items() if p[1] == root}
    return {(pid, procs[pid][3]) for pid in found}


def _alive(tree: set[tuple[int, int]]) -> set[int]:
    procs = _processes()
    return {pid for pid, start in tree if pid in procs and procs[pid][3] == start and procs[pid][2] != "Z"}


def _stop_ray_head(proc: subprocess.Popen, grace: float = 15) -> set[int]:
    """Stop the Ray instance this test started, and only it: SIGTERM to its `ray start --block` (which drains the
    node and stops what it started), then SIGKILL to every process that descends from it. Never `ray stop`, which
    would also kill every other Ray instance on the machine (other test sessions' included). Returns the pids
    still alive afterwards (none expected)."""
    tree = _descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for pid in _alive(tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(timeout=10)
    deadline = time.time() + 15
    while _alive(tree) and time.time() < deadline:
        time.sleep(0.5)
    return _alive(tree)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_submit_runs_the_pretraining_entrypoint_on_a_local_head(tmp_path):
    """The RayJob path without Kubernetes: a head started by `ray start` from the repository root (the image's
    /app), token auth on, the job submitted with `ray job submit` and the manifest's relative entrypoint."""
    gcs, dashboard, agent, client = _free_ports(4)
    temp_dir = Path(tempfile.mkdtemp(prefix="momu-infra-", dir="/tmp"))  # short: Ray's socket paths have a limit
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # Single-node mode: the node IP is 127.0.0.1 and every Ray port binds to loopback only (without it,
        # `ray start --node-ip-address 127.0.0.1` swaps in the machine's address).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the entrypoint is this environment's
    head_log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(agent),
         "--ray-client-server-port", str(client), "--num-cpus", "2", "--temp-dir", str(temp_dir),
         "--disable-usage-stats"],
        cwd=REPO, env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    submission = f"momu-infra-smoke-{secrets.token_hex(4)}"
    timings, started = {}, time.time()
    try:
        deadline = time.time() + 120
        while True:  # the job API answers once the dashboard is up
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.time() < deadline, probe.stderr[-2000:]
            time.sleep(2)
        timings["head_up"] = time.time() - started
        started = time.time()
        assert "Local node IP: 127.0.0.1" in re.sub(r"\x1b\[[0-9;]*m", "", (tmp_path / "head.log").read_text())

        manifest = yaml.safe_load((K8S / "base" / "rayjob-pretrain.yaml").read_text())
        script = shlex.split(manifest["spec"]["entrypoint"])[1]
        # The tiny config on the first 320 of its pairs (the job's cost is mostly per-pair work: featurizing and
        # encoding every description once for the locked text tower).
        pairs = (REPO / "data" / "sample" / "chebi20" / "validation_slice.tsv").read_text().splitlines(True)
        (tmp_path / "pairs.tsv").write_text("".join(pairs[:321]))
        command = ["python", script, "--config", "configs/pretrain_tiny.yaml",
                   "--data_paths", f"[{tmp_path / 'pairs.tsv'}]",
                   "--storage_path", str(out / "ray_results"), "--text_cache_dir", str(out / "text_cache"),
                   "--output-dir", str(out / "model"), "--scaling.num_workers", "1", "--max_steps", "6",
                   "--checkpoint_every", "3", "--embedding_plot", "false"]
        submit = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address,
                                 "--submission-id", submission, "--", *command],
                                env=env, capture_output=True, text=True, timeout=480)
        logs = submit.stdout + submit.stderr
        timings["job"] = time.time() - started
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, submission],
                                env=env, capture_output=True, text=True, timeout=60)
        status_text = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout + status.stderr)
        assert re.search(rf"Job '{submission}' succeeded", status_text), status_text[-2000:] + logs[-4000:]
        assert submit.returncode == 0, logs[-4000:]
        assert "6 steps" in logs and "registered: models:/momu-tiny/" in logs, logs[-3000:]
        assert (out / "model" / "model.safetensors").is_file()
        assert list((out / "ray_results").rglob("checkpoint_*"))

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        versions = client.search_model_versions("name='momu-tiny'")
        assert len(versions) == 1
        run = client.get_run(versions[0].run_id)
        assert run.data.params["scaling.num_workers"] == "1" and "train_loss" in run.data.metrics
    finally:
        stopping = time.time()
        leftovers = _stop_ray_head(head)
        timings["stop"] = time.time() - stopping
        head_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
        assert not leftovers, f"processes of the test's Ray head still running: {leftovers}"
