"""A run in MLflow: parameters and tags at the start, the logs every `logging_steps`, its files at the end.

llmlab talks to the tracking server itself (not through transformers' MLflowCallback) so that a server
that goes away never stops training: every call is tried once more at most, with a short timeout, and what
did not reach the server is listed in `metrics.json` (`tracking.not_logged`) and printed. A server that does
not answer before the model loads fails the preflight with its URI. The run id is kept in output_dir, so
`--resume` continues the same MLflow run.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError
from llmlab.train.schema import TrainConfig

RUN_ID_FILE = ".mlflow_run_id"
# The client's own default retries for minutes (7 tries, doubling waits); a training run must not.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter value


def tracking_uri(cfg: TrainConfig, host_uri: str | None) -> str:
    """The config's tracking_uri, else the host config's, else a file store in output_dir/mlruns."""
    return cfg.tracking_uri or host_uri or (cfg.output_dir / "mlruns").as_uri()


def _client(uri: str):
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    if uri.startswith("file:"):
        # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked; it is the one local
        # store the client alone (mlflow-skinny, no SQLAlchemy) can write.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_server(uri: str) -> None:
    """Fail (ConfigError naming the URI) when the tracking store does not answer; before anything loads."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "tracking: 'mlflow' needs the mlflow client (pip install mlflow-skinny; the lab environment has "
            "it); valid without it: none, tensorboard"
        )
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as exc:  # requests' connection errors, MlflowException (auth, TLS, HTTP status)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"tracking_uri: the MLflow tracking server at {uri} does not answer ({first[:300]}); start it, "
            "correct tracking_uri (or the host config's), or set tracking: none"
        ) from None


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: dotted keys for sections, lists as JSON."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
        return out
    value = json.dumps(data) if isinstance(data, list) else str(data)
    return {prefix.rstrip("."): value[:PARAM_LIMIT]}


class MlflowRun:
    """One llmlab run as one MLflow run. A call that fails is noted in `not_logged`; training goes on."""

    def __init__(self, cfg: TrainConfig, uri: str) -> None:
        self.cfg, self.uri = cfg, uri
        self.client = _client(uri)
        self.run_id: str | None = None
        self.not_logged: list[str] = []
        self._failed_steps: set[int] = set()
        self._failed = False

    def _try(self, what: str, call, *args, step: int | None = None, quiet: bool = False, **kwargs) -> bool:
        """Make one call; on failure say so (the first time), note `what` (or the step), and go on."""
        try:
            call(*args, **kwargs)
            return True
        except Exception as exc:
            if not self._failed:
                from llmlab.train.run import say

                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                say(f"MLflow server at {self.uri} did not take {what} ({reason}); training goes on")
            self._failed = True
            if step is not None:
                self._failed_steps.add(step)
            elif not quiet:
                self.not_logged.append(what)
            return False

    def start(self, data_hashes: dict[str, str], resume: bool) -> None:
        id_file = self.cfg.output_dir / RUN_ID_FILE
        if resume and id_file.is_file():
            self.run_id = id_file.read_text(encoding="utf-8").strip()
            self._try("the run's status", self.client.update_run, self.run_id, status="RUNNING")
            return
        try:
            experiment = self.client.get_experiment_by_name(self.cfg.experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(self.cfg.experiment_name)
            )
            tags = {
                "mlflow.runName": self.cfg.output_dir.name,
                "llmlab.host": socket.gethostname(),
                "llmlab.method": self.cfg.method,
                "llmlab.base_model": self.cfg.base_model,
                "llmlab.output_dir": str(self.cfg.output_dir),
                "llmlab.data_sha256": json.dumps(data_hashes),
                **{f"llmlab.data.{Path(path).name}": digest for path, digest in data_hashes.items()},
            }
            run = self.client.create_run(experiment_id, tags=tags)
        except Exception as exc:
            self.not_logged.append("the run itself (parameters, metrics, artifacts)")
            from llmlab.train.run import say

            say(f"MLflow server at {self.uri} did not create the run ({str(exc)[:200]}); training goes on")
            return
        self.run_id = run.info.run_id
        self.cfg.output_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(self.run_id + "\n", encoding="utf-8")
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flat_params(self.cfg.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self._try("parameters", self.client.log_batch, self.run_id, params=params[start : start + 100])

    def log_metrics(self, step: int, logs: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key.replace("/", "_"), float(value), now, step)
            for key, value in logs.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if metrics:
            self._try(
                f"metrics at step {step}", self.client.log_batch, self.run_id, metrics=metrics, step=step
            )

    def finish(self, summary: dict[str, Any], files: list[Path], completed: bool) -> None:
        """The final figures as metrics, the output files as artifacts, and the run's end status."""
        if self.run_id is None:
            return
        final = {
            key: summary[key]
            for key in ("final_loss", "eval_loss", "tokens_per_second", "wall_time_seconds")
            if isinstance(summary.get(key), int | float)
        }
        cost = (summary.get("cost") or {}).get("total")
        if isinstance(cost, int | float):
            final["cost"] = cost
        self.log_metrics(
            summary.get("global_step", 0), {f"final_{k}" if k != "cost" else k: v for k, v in final.items()}
        )
        missed = [
            p.name
            for p in files
            if not self._try(f"artifact {p.name}", self.client.log_artifact, self.run_id, str(p), quiet=True)
        ]
        if missed:
            self.not_logged.append(f"artifacts {', '.join(missed)}")
        status = "FINISHED" if completed else "KILLED"
        self._try("the run's end status", self.client.set_terminated, self.run_id, status)

    def report(self) -> dict[str, Any]:
        not_logged = list(self.not_logged)
        if self._failed_steps:
            steps = sorted(self._failed_steps)
            not_logged.insert(0, f"metrics of {len(steps)} logging step(s), steps {steps[0]}-{steps[-1]}")
        return {
            "backend": "mlflow",
            "uri": self.uri,
            "experiment": self.cfg.experiment_name,
            "run_id": self.run_id,
            "not_logged": not_logged,
        }


def make_callback(run: MlflowRun):
    from transformers import TrainerCallback

    class MlflowLogs(TrainerCallback):
        """The Trainer's logs (loss, learning rate, evaluations, DPO's rewards) every logging_steps."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                run.log_metrics(state.global_step, logs)

    return MlflowLogs()
