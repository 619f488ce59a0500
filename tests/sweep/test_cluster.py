"""ray_cluster.yaml against the autoscaler schema shipped in the ray wheel. (A sweep across several
nodes through ``--address``, added and removed by the autoscaler: tests/sweep/test_autoscale.py.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def validate(doc):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(doc, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(doc)))


def test_cluster_yaml_is_valid_and_scales_gpus_from_zero():
    doc = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate(doc)
    assert doc["provider"]["type"] == "aws"
    gpu_types = [t for t in doc["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["GPU"] == 0
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["hybridlt_trial"] >= 1  # Train trials' slots
    assert any("pip install" in c and "-e ." in c for c in doc["setup_commands"])
    # fractional-GPU trials share each GPU through CUDA MPS, started on every GPU node before Ray;
    # a node type's own worker_setup_commands replace setup_commands, so they repeat the install
    for t in gpu_types:
        assert t["worker_setup_commands"][:len(doc["setup_commands"])] == doc["setup_commands"]
        assert t["worker_setup_commands"][-1].startswith("nvidia-cuda-mps-control -d")


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("provider"), "provider"),
    (lambda d: d.update(nodes=3), "nodes"),
    (lambda d: d["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5), "0.5"),
    (lambda d: d.update(head_node_type="missing"), "head_node_type"),
    (lambda d: d.update(max_workers="eight"), "eight"),
])
def test_bad_cluster_files_are_rejected(mutate, expected):
    doc = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    mutate(doc)
    with pytest.raises(Exception) as info:  # jsonschema.ValidationError or the autoscaler's ValueError
        validate(doc)
    assert expected in str(info.value)
