"""cluster.yaml against the installed Ray's cluster-launcher schema (offline), and its security promises."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from vidfuse.engine.ray_runtime import LOCAL_ENV_VARS

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


# --- `ray job submit` against a head started here ------------------------------------------------------------
#
# The head is this test's own: its own ports (all picked free, none of Ray's defaults), its own temp dir
# (where `ray start` also records its address, so no other process's `ray.init()` joins it), and its own token.
# The session's `ray_session` Ray, if started, is untouched. It is stopped by signalling the `ray start --block`
# process it launched, which shuts down its own Ray processes: `ray stop` would kill every Ray process on the
# machine, including other test sessions' clusters.

RAY_BIN = Path(sys.executable).parent / "ray"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ray(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def local_head(tmp_path, tmp_path_factory):
    """A head on loopback with token authentication; yields (dashboard address, env for CLI calls)."""
    temp_dir = tmp_path_factory.mktemp("r")  # a short path: Ray's socket paths below it must stay < 108 chars
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               PATH=f"{RAY_BIN.parent}{os.pathsep}{env.get('PATH', '')}")  # the job's `python` is this venv's
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics = _free_ports(7)
    # Every process of this cluster finds its State API here rather than by scanning the machine (which fails
    # beside other Ray instances and breaks Ray Train's placement-group cleaner).
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    # On SIGTERM, `ray start --block` first drains the node for up to 30 s (for Serve replicas to finish requests):
    # nothing here needs that, and it was half of this test's time.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    env.update(LOCAL_ENV_VARS)  # the job's run ends sooner, as on vidfuse's local Ray (ray_runtime)
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [str(RAY_BIN), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}", "--num-cpus=3",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while _ray(env, "job", "list", "--address", address).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(2)
        yield address, env
    finally:
        head.terminate()  # SIGTERM: `ray start --block` shuts down the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()


def test_ray_job_submit_trains_a_run(local_head, tiny_dataset, tmp_path):
    address, env = local_head
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    denied = _ray({**env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, "job", "list", "--address", address)
    assert denied.returncode != 0  # token authentication is on: another token is refused

    storage = tmp_path / "runs"
    job_id = f"vidfuse-test-{secrets.token_hex(4)}"
    command = ["job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", str(REPO),
               "--", "python", "launch.py", "train", "--data", str(tiny_dataset.parquet), "--split", "1",
               "--name", "jobrun", "--storage", str(storage), "--workers", "1", "--epochs", "1",
               "--set", "model.depth=10", "--set", "model.fusion=gap", "--set", "data.sample_duration=8",
               "--set", "data.sample_size=32", "--set", "data.n_val_clips=1", "--set", "run.batch_size=4"]
    deadline = time.monotonic() + 90
    while True:  # a head that answers `job list` may not have its job agent up yet: Ray asks to try again
        submit = _ray(env, *command, timeout=300)
        if "No available agent to submit job" not in submit.stdout + submit.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    status = _ray(env, "job", "status", "--address", address, job_id)
    errors = [line for line in (submit.stdout + submit.stderr).splitlines() if "Error" in line or "error:" in line]
    assert f"Job '{job_id}' succeeded" in status.stdout, "\n".join([status.stdout[-1000:], *errors[-20:]])

    run_dir = storage / "jobrun"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert 0.0 <= records[0]["val_video_acc"] <= 1.0
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (trained["model"]["depth"], trained["run"]["workers"], trained["run"]["epochs"]) == (10, 1, 1)
    assert trained["data"]["path"] == str(tiny_dataset.parquet)
    assert (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file()
    assert f"run folder: {run_dir}" in submit.stdout  # the job's own output came back through `ray job submit`


def test_a_job_runtime_env_that_sets_vidfuses_own_keys_is_one_line(tiny_dataset, tmp_path):
    """`ray job submit --runtime-env-json` with a `worker_process_setup_hook` (or one of vidfuse's env vars): Ray
    refuses to merge it with vidfuse's in `ray.init`, which gave a 20-line ValueError traceback and exit 1. The job
    supervisor hands the job's runtime env to the driver in RAY_JOB_CONFIG_JSON_ENV_VAR, set here by hand; the merge
    fails before Ray connects, so the address need not exist."""
    job_config = {"runtime_env": {"worker_process_setup_hook": "mymodule.setup",
                                  "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "1"}}}
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job_config)}
    result = subprocess.run(
        [sys.executable, "launch.py", "train", "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path),
         "--name", "hooked", "--batch_size", "4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "vidfuse: error: the job's runtime env (ray job submit --runtime-env-json) sets what vidfuse sets for its "
        "workers (worker_process_setup_hook, RAY_DATA_PARQUET_READER_CPU_COUNT, "
        "RAY_DATA_PARQUET_READER_IO_THREAD_COUNT, "
        "RAY_TRAIN_ENABLE_PRINT_PATCH): leave those out, or set RAY_OVERRIDE_JOB_RUNTIME_ENV=1 to keep vidfuse's "
        "(docs/cluster.md)")
    assert not (tmp_path / "hooked").exists()


def test_a_local_rays_workers_get_the_job_env_and_train_checks_on_its_workers_every_half_second(ray_session):
    """`start_local_ray` (the session's Ray here): every worker process has vidfuse's job env vars, its dashboard's
    address, and the local-only quicker Ray Train health check, which Ray Train's controller reads as its poll
    interval (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, default 2 s)."""
    from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR

    from vidfuse.engine.ray_runtime import JOB_ENV_VARS

    @ray.remote(num_cpus=0)
    def worker_env() -> dict[str, str | None]:
        return dict(os.environ)

    seen = ray.get(worker_env.remote())
    assert {key: seen.get(key) for key in JOB_ENV_VARS} == JOB_ENV_VARS
    assert seen.get(HEALTH_CHECK_INTERVAL_S_ENV_VAR) == LOCAL_ENV_VARS[HEALTH_CHECK_INTERVAL_S_ENV_VAR] == "0.5"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", seen.get("RAY_API_SERVER_ADDRESS", ""))
