"""deploy/kuberay/*.yaml against the KubeRay operator's CRD schemas (OpenAPI v3, read from
``<repo>/../shared/schemas/kuberay/``), with unknown fields refused as ``kubectl --validate=strict`` does."""

from __future__ import annotations

import copy
import functools
import shlex
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]


def _schemas_dir() -> Path:
    """``<repo>/../shared/schemas/kuberay``; in a git worktree also beside the main checkout."""
    candidates = [ROOT.parent / "shared" / "schemas" / "kuberay"]
    git = ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().split(":", 1)[1].strip())
        candidates.append(gitdir.parents[2].parent / "shared" / "schemas" / "kuberay")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SCHEMAS = _schemas_dir()
DEPLOY = ROOT / "deploy" / "kuberay"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}

needs_schemas = pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"KubeRay CRD schemas not found at {SCHEMAS} "
                                "(a checkout with shared/schemas/kuberay/ beside the repo)")


def to_json_schema(node):
    """An OpenAPI v3 structural schema as a JSON schema: ``x-kubernetes-int-or-string`` becomes
    integer-or-string, and an object with listed properties refuses others unless it keeps unknown
    fields (``x-kubernetes-preserve-unknown-fields``). Other ``x-kubernetes-*`` keys are ignored."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (isinstance(out.get("properties"), dict) and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB of YAML
    crd = yaml.load((SCHEMAS / CRDS[kind]).read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    return to_json_schema(version["schema"]["openAPIV3Schema"])


def validate(doc: dict) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    jsonschema.validate(doc, crd_schema(doc["kind"]), cls=jsonschema.Draft7Validator)


def manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def cluster_specs():
    cluster = manifest("raycluster.yaml")
    job = manifest("rayjob.yaml")
    return cluster["spec"], job["spec"]["rayClusterSpec"]


@needs_schemas
@pytest.mark.parametrize("name, kind", [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")])
def test_manifest_is_valid_against_its_crd(name, kind):
    doc = manifest(name)
    assert doc["kind"] == kind
    validate(doc)


def test_both_manifests_describe_the_same_autoscaling_cluster():
    cluster, job_cluster = cluster_specs()
    assert cluster == job_cluster  # rayjob.yaml starts exactly the interactive cluster
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head offers no trial capacity
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu-mps"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["template"]["spec"]["nodeSelector"]["nvidia.com/mps.capable"] == "true"
    images = set()
    for pod in [head["template"]] + [g["template"] for g in groups.values()]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        for c in pod["spec"]["containers"]:
            images.add(c["image"])
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert claims.get("shared") == "hybridlt-shared" and mounts["shared"] == "/mnt/shared"
    assert len(images) == 1  # one image everywhere: driver and workers run the same code


def test_rayjob_entrypoint_is_a_sweep_the_project_accepts():
    from hybridlt.sweep.spec import load_sweep_spec

    job = manifest("rayjob.yaml")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["hybridlt", "sweep"] and argv[argv.index("--address") + 1] == "auto"
    spec_path = Path(argv[2])
    assert spec_path.parts[:2] == ("/", "app")  # the image holds the repo at /app
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    spec, base = load_sweep_spec(ROOT / spec_path.relative_to("/app"), sets)
    assert spec.storage == "/mnt/shared/sweeps" and spec.resources.gpus_per_worker == 0.25
    assert base.train.device == "cuda"
    assert job["shutdownAfterJobFinishes"] is True


@needs_schemas
@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="eight"), "eight"),
    (lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
    (lambda d: d["spec"]["headGroupSpec"].update(rayStartParams={"num-cpus": 0}), "0"),
    (lambda d: d["spec"].update(autoscaling=True), "autoscaling"),
    (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=3), "3"),
    (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
     .update({"nvidia.com/gpu": [1]}), "[1]"),
])
def test_bad_cluster_manifests_are_refused(mutate, expected):
    doc = copy.deepcopy(manifest("raycluster.yaml"))
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError) as info:
        validate(doc)
    assert expected in str(info.value)


@needs_schemas
def test_a_rayjob_without_a_cluster_template_field_is_refused():
    doc = manifest("rayjob.yaml")
    doc["spec"]["rayClusterSpec"]["headGroupSpec"].pop("template")
    with pytest.raises(jsonschema.ValidationError, match="template"):
        validate(doc)
