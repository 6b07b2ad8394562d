"""Optional MLflow tracking of a network as it trains (`experiment.mlflow`), beside log.csv and TensorBoard.

`experiment.mlflow`: null or false, off; true, MLflow's file store `<experiment.output_dir>/mlruns` (one store
for every run under that folder, so MLflow compares them); a string, a tracking URI (`http://host:5000`,
`sqlite:///mlflow.db`) or the folder of a file store. Each network is an MLflow run in the MLflow experiment
named `experiment.name`: a student `<run>/seed<k>`, a teacher `teachers/<key>`, a pretrained backbone
`pretrained/<key>`. Its params are its spec (a run's resolved config) flattened to dotted keys; its metrics the
log.csv columns per epoch (TensorBoard's names, `loss/total`, `train/lr`, ...) and the final scores
(`eval/mAP`, ... as fractions) at the last epoch's step; its artifact metrics.json. A network resumed after a
kill continues its MLflow run, found by its folder and spec hash (steps logged after the checkpoint the kill
fell behind are logged again: MLflow keeps both).

log.csv and metrics.json stay the record: tracking only reads what the run computes (its numbers are the same
with it on or off, and a run's config hash leaves `experiment.mlflow` out), and a tracking call that fails
(a server gone) is said in one warning and tracking stops, the run goes on. It is an optional extra
(`pip install 'reid-kd[mlflow]'`: the light `mlflow-skinny` client); a config asking for it without the package
stops before any training, in one line. MLflow 3 keeps its file store only on request: reid-kd sets
`MLFLOW_ALLOW_FILE_STORE=true` when it writes one; set it too to read one back
(`MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri runs/mlruns`, `mlflow` the full package).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from reid_kd.config import config_hash
from reid_kd.errors import ConfigError

logger = logging.getLogger(__name__)
STORE = "mlruns"  # the default file store's folder under experiment.output_dir
PARAMS_PER_CALL = 100  # MLflow's cap on params in one log_batch
FOLDER_TAG, HASH_TAG = "reid_kd.folder", "reid_kd.config_hash"


def tracking_uri(cfg: dict) -> str | None:
    """`experiment.mlflow` as a tracking URI, None when tracking is off."""
    value = cfg["experiment"]["mlflow"]
    if value is None or value is False:
        return None
    if value is True:
        return Path(cfg["experiment"]["output_dir"], STORE).resolve().as_uri()
    if len(urlparse(value).scheme) > 1:  # a URI (a one-letter scheme is a Windows drive)
        return value
    return Path(value).resolve().as_uri()


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def check_mlflow(cfg: dict) -> None:
    """A config asking for MLflow where it is not installed stops here, before any training, in one line."""
    if tracking_uri(cfg) is not None and not mlflow_installed():
        raise ConfigError("config key 'experiment.mlflow' asks for MLflow tracking but mlflow is not installed; "
                          "pip install 'reid-kd[mlflow]', or set experiment.mlflow=null")


def flat_params(spec: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, values as YAML writes scalars (lists and null as JSON)."""
    out = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            out |= flat_params(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def mlflow_run(cfg: dict, name: str, spec: dict) -> MLflowRun | None:
    """The MLflow run of a network named `name` and made under `spec` (what its folder records), None when the
    config tracks nothing."""
    uri = tracking_uri(cfg)
    if uri is None:
        return None
    check_mlflow(cfg)
    return MLflowRun(uri, cfg["experiment"]["name"], name, spec)


class MLflowRun:
    """One network's MLflow run through MLflow's client (not its global active run: networks trained side by
    side each log to their own). Every call after a failed one does nothing."""

    def __init__(self, uri: str, experiment: str, name: str, spec: dict):
        self.uri, self.experiment, self.name, self.spec = uri, experiment, name, spec
        self.client, self.run_id = None, None
        self.failed = False

    def _call(self, what: str, action) -> None:
        """`action()`; a failure is warned once and stops this run's tracking (tracking never stops training)."""
        if self.failed or (self.run_id is None and what != "start"):
            return
        try:
            action()
        except Exception as e:  # MlflowException, a lost connection, a full disk: any of them ends tracking alone
            self.failed = True
            detail = " ".join(str(e).split())[:200]
            logger.warning(f"MLflow tracking of {self.name} at {self.uri} stopped ({what}: {detail}); the run goes "
                           "on, log.csv and metrics.json are its record")

    def start(self, folder: Path) -> None:
        """Continue the MLflow run of this folder and spec (a resumed network), or begin one with its params."""
        self._call("start", lambda: self._start(folder))

    def _start(self, folder: Path) -> None:
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store otherwise
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=self.uri)
        experiment_id = self._experiment_id()
        tags = {FOLDER_TAG: str(folder.resolve()), HASH_TAG: config_hash(self.spec)}
        found = [r for r in client.search_runs([experiment_id], f"tags.`{HASH_TAG}` = '{tags[HASH_TAG]}'",
                                               order_by=["attributes.start_time DESC"])
                 if r.data.tags.get(FOLDER_TAG) == tags[FOLDER_TAG]]
        if found:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = client.create_run(experiment_id, run_name=self.name, tags=tags).info.run_id
        params = [Param(k, v) for k, v in flat_params(self.spec).items()]
        for i in range(0, len(params), PARAMS_PER_CALL):
            client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_CALL])

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # another process created it meanwhile (bench workers share a store)
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._call("log", lambda: self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step)
                                                                              for k, v in values.items()]))

    def log_file(self, path: Path) -> None:
        self._call("artifact", lambda: self.client.log_artifact(self.run_id, str(path)))

    def end(self, status: str) -> None:
        """FINISHED, or FAILED for training stopped before its last epoch (a resume sets it RUNNING again)."""
        self._call("end", lambda: self.client.set_terminated(self.run_id, status))
