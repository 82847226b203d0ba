"""`tracking: mlflow` against a real MLflow server started here (SQLite backend, served artifacts)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from train_helpers import base_config, write_config

from llmlab.config import ConfigError
from llmlab.train import tracking
from llmlab.train.run import train
from llmlab.train.schema import load_train_config

STEPS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """(URI, process) of `mlflow server` on a free loopback port; the process group is ended afterwards."""
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination",
            str(work / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "w"),  # noqa: SIM115 (open for the server's lifetime)
        start_new_session=True,  # the server's uvicorn workers are its children: stop the whole group
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded machine takes 30 s and more to start it
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                break
        except OSError:
            assert proc.poll() is None, (work / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(1)
    yield uri, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def tracked_config(model: Path, data: Path, tmp_path: Path, name: str, uri: str, **overrides) -> Path:
    config = base_config(
        model, data, tmp_path / "output", max_steps=STEPS, tracking="mlflow", tracking_uri=uri, **overrides
    )
    return write_config(tmp_path / f"{name}.yaml", config)


@pytest.mark.slow
def test_a_run_lands_in_its_experiment_with_params_metrics_and_artifacts(
    mlflow_server, tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    uri, _ = mlflow_server
    config = tracked_config(
        tiny_llama_dir, instruction_data, tmp_path, "capitals-v1", uri, plan={"gpu_hour_prices": {"cpu": 2.0}}
    )
    cfg = load_train_config(config)
    assert cfg.experiment_name == "capitals-v1"  # the config file's name, not output_dir's ("output")
    metrics = train(cfg).metrics
    assert metrics["tracking"]["not_logged"] == []

    client = tracking._client(uri)
    experiment = client.get_experiment_by_name("capitals-v1")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == metrics["tracking"]["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.02" and run.data.params["plan.mfu"] == "0.35"
    assert run.data.tags["llmlab.host"] == socket.gethostname()
    assert json.loads(run.data.tags["llmlab.data_sha256"]) == metrics["provenance"]["data_files"]
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, STEPS + 1))  # every logging_steps (1)
    assert [m.value for m in losses] == pytest.approx([p["loss"] for p in metrics["loss_curve"]], rel=1e-6)
    assert run.data.metrics["cost"] == pytest.approx(metrics["cost"]["total"])  # what the run cost
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "metrics.json",
        "train_config.yaml",
        "adapter_model.safetensors",
        "adapter_config.json",
    } <= artifacts
    logged = json.loads(
        Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read_text()
    )
    assert logged["loss_curve"] == metrics["loss_curve"]


def test_an_unreachable_server_fails_the_preflight_with_its_uri(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_train_config(tracked_config(tiny_llama_dir, instruction_data, tmp_path, "t", uri))
    began = time.monotonic()
    with pytest.raises(ConfigError, match=f"the MLflow tracking server at {uri} does not answer"):
        train(cfg)
    assert time.monotonic() - began < 30
    assert not (tmp_path / "output").exists()  # nothing loaded, nothing written


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_loses_nothing_locally(
    mlflow_server, tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    uri, proc = mlflow_server
    log_metrics = tracking.MlflowRun.log_metrics

    def stop_the_server_at_step_3(self, step, logs):
        if step == 3 and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        log_metrics(self, step, logs)

    monkeypatch.setattr(tracking.MlflowRun, "log_metrics", stop_the_server_at_step_3)
    cfg = load_train_config(tracked_config(tiny_llama_dir, instruction_data, tmp_path, "goes-away", uri))
    result = train(cfg)
    assert result.exit_code == 0 and result.metrics["status"] == "completed"
    on_disk = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert [p["step"] for p in on_disk["loss_curve"]] == list(range(1, STEPS + 1))
    not_logged = on_disk["tracking"]["not_logged"]
    assert not_logged[0] == f"metrics of {STEPS - 2} logging step(s), steps 3-{STEPS}", not_logged
    assert any(item.startswith("artifacts ") and "metrics.json" in item for item in not_logged), not_logged
    assert "the run's end status" in not_logged
    out = capsys.readouterr().out
    assert f"the MLflow server at {uri} did not receive: metrics of {STEPS - 2} logging step(s)" in out


def test_without_a_uri_a_run_goes_to_a_file_store_in_output_dir(
    tiny_llama_dir: Path, instruction_data: Path, tmp_path: Path
) -> None:
    cfg = load_train_config(tracked_config(tiny_llama_dir, instruction_data, tmp_path, "local", uri=None))
    uri = tracking.tracking_uri(cfg, host_uri=None)
    assert uri == (tmp_path / "output" / "mlruns").as_uri()
    tracking.check_server(uri)  # MLflow refuses its file store unless told; llmlab tells it
    run = tracking.MlflowRun(cfg, uri)
    run.start({"data.jsonl": "0" * 64}, resume=False)
    run.log_metrics(1, {"loss": 2.5, "rewards/margins": 0.5})
    run.finish({"global_step": 1}, [write_config(tmp_path / "f.yaml", {"a": 1})], completed=True)
    assert run.report()["not_logged"] == []
    logged = tracking._client(uri).get_run(run.run_id)
    assert logged.data.metrics == {"loss": 2.5, "rewards_margins": 0.5}
    assert logged.info.status == "FINISHED" and logged.data.tags["llmlab.data.data.jsonl"] == "0" * 64
