"""cluster.yaml against the installed Ray's cluster-launcher schema (offline), and its security promises."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _schema() -> dict:
    return json.loads(SCHEMA.read_text())


def test_cluster_yaml_matches_ray_schema(cluster):
    jsonschema.validate(cluster, _schema())
    validate_config(prepare_config(copy.deepcopy(cluster)))  # Ray's cross-field checks (no cloud calls)


def test_schema_rejects_a_misspelt_key(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu.8xh100"]["max_worker"] = 4  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(broken, _schema())


def test_node_types_split_decoding_from_training(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu = types["gpu.8xh100"]
    assert gpu["labels"] == {"ray-subcluster": "training"}
    assert gpu["node_config"]["InstanceType"] == "p5.48xlarge"
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"]
    data = types["data.cpu"]
    assert data["labels"] == {"ray-subcluster": "data"}
    assert data["node_config"]["InstanceType"].startswith("c")  # compute-optimised CPU instance, no GPU
    assert sum(t.get("max_workers", 0) for t in types.values()) <= cluster["max_workers"]


def test_only_ssh_is_open_and_token_auth_is_on(cluster):
    assert cluster["provider"]["security_group"]["IpPermissions"] == []  # Ray adds SSH + intra-cluster only
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in yaml.safe_dump(cluster)
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_setup_pins_the_tested_versions(cluster):
    """Every `name==version` pin in setup_commands (and the image's Ray) is the version installed here."""
    setup = " ".join(cluster["setup_commands"])
    pins = dict(re.findall(r"([A-Za-z][\w.-]*)(?:\[[\w,]+\])?==([\w.]+)", setup))
    assert {"ray", "torch", "torchvision", "pyarrow", "av"} <= set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
    assert cluster["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert cluster["docker"]["head_image"] == f"rayproject/ray:{ray.__version__}-py311"
    assert cluster["file_mounts"]["~/vidfuse"] == "."
    assert "pip install --quiet --no-deps -e ~/vidfuse" in cluster["setup_commands"]
