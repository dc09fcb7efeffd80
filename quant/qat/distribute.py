"""Where fine-tuning runs: one ``tf.distribute`` strategy per process, for every mode.

``none`` is a ``OneDeviceStrategy`` on ``--device``; ``mirrored`` a ``MirroredStrategy``
over the local GPUs (over the logical CPUs when there is no GPU or ``--device cpu``: tests
split the CPU in two with ``tf.config.set_logical_device_configuration``);
``multiworker`` a ``MultiWorkerMirroredStrategy`` over the machines named in ``TF_CONFIG``
(each uses its local GPUs, or its CPU). The training loop is the same for all three.

TensorFlow allows a ``MultiWorkerMirroredStrategy`` only before anything else runs, so a
program calls :func:`strategy` first (``quantize`` does, before loading the model); later
calls return the same object.

Example ``TF_CONFIG`` of the second of two machines (the first, ``index`` 0, is the chief:
it writes ``state.json`` and the outputs)::

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 1}}'
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
from typing import Any

from edgeq.errors import BadInputError, MissingToolError
from quant.modes import Strategy, TrainingDevice, parse

#: Seconds to wait for a TCP answer from each machine of TF_CONFIG.
CONNECT_TIMEOUT_S = 5.0
#: The cluster jobs that train (an evaluator does not).
TRAINING_JOBS = ("chief", "worker")


def device_name(device: TrainingDevice | str) -> str:
    """Return the TensorFlow device for ``auto`` / ``cpu`` / ``gpu``.

    Raises:
        BadInputError: an unknown device name.
        MissingToolError: ``gpu`` asked for but TensorFlow sees none.
    """
    from edgeq._tensorflow import tf

    device = parse(TrainingDevice, device, "--device")
    gpus = tf.config.list_physical_devices("GPU")
    if device == TrainingDevice.GPU and not gpus:
        raise MissingToolError("--device gpu: TensorFlow sees no GPU here; use --device cpu "
                               "or auto (a GPU needs the tensorflow[and-cuda] wheel)")
    return "/GPU:0" if gpus and device != TrainingDevice.CPU else "/CPU:0"


@functools.cache
def strategy(kind: Strategy | str = Strategy.NONE,
             device: TrainingDevice | str = TrainingDevice.AUTO) -> Any:
    """Return the ``tf.distribute.Strategy`` of ``kind`` on ``device`` (one per process).

    Raises:
        BadInputError: an unknown kind or device, a malformed ``TF_CONFIG``, or
            ``multiworker`` asked for after TensorFlow started (call this first).
        MissingToolError: ``gpu`` without a GPU; ``multiworker`` without ``TF_CONFIG`` or
            with a machine of it that cannot be reached.
    """
    from edgeq._tensorflow import tf

    kind = parse(Strategy, kind, "--strategy")
    where = device_name(device)
    if kind == Strategy.NONE:
        return tf.distribute.OneDeviceStrategy(where)
    if kind == Strategy.MIRRORED:
        kind_name = "GPU" if where.startswith("/GPU") else "CPU"
        devices = [d.name for d in tf.config.list_logical_devices(kind_name)]
        return tf.distribute.MirroredStrategy(devices)
    if where.startswith("/CPU") and tf.config.list_physical_devices("GPU"):
        raise BadInputError("--strategy multiworker trains on every local GPU; to train on "
                            "the CPU hide them with CUDA_VISIBLE_DEVICES=")
    config = cluster_config()
    check_cluster(config)
    if _peers(config):
        print(f"--strategy multiworker: waiting for the other machines of TF_CONFIG "
              f"({', '.join(_peers(config))})", file=sys.stderr, flush=True)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        raise BadInputError(f"--strategy multiworker: {str(exc).splitlines()[0]}; create the "
                            "strategy (quant.qat.distribute.strategy) before building any "
                            "model") from exc


def cluster_config() -> dict[str, Any]:
    """Return ``TF_CONFIG`` (``cluster`` and this machine's ``task``), checked.

    Raises:
        MissingToolError: ``TF_CONFIG`` is not set.
        BadInputError: it is not JSON, or lacks the cluster or a task inside it.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        raise MissingToolError("--strategy multiworker needs TF_CONFIG (the cluster's "
                               "host:port list and this machine's task, as JSON) in the "
                               "environment; see quant/qat/distribute.py")
    try:
        config = json.loads(text)
        jobs = config["cluster"]
        task = config["task"]
        addresses = jobs[task["type"]]
        if not 0 <= int(task["index"]) < len(addresses):
            raise IndexError(f"task index {task['index']} of {len(addresses)}")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadInputError(f"TF_CONFIG is malformed ({type(exc).__name__}: {exc}); give "
                            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
                            '"worker", "index": N}}') from None
    return config


def _peers(config: dict[str, Any]) -> list[str]:
    """Return the ``host:port`` of every other training machine of ``config``."""
    own = config["task"]
    return [address for job in TRAINING_JOBS
            for index, address in enumerate(config["cluster"].get(job, []))
            if (job, index) != (own["type"], int(own["index"]))]


def check_cluster(config: dict[str, Any], timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Check that every other machine of ``config`` can be reached.

    A machine that refuses the connection is reachable (its worker has not started yet, and
    TensorFlow waits for it); a name that does not resolve, or a host that does not answer
    within ``timeout`` seconds, is not.

    Raises:
        BadInputError: an address is not ``host:port``.
        MissingToolError: a machine cannot be reached.
    """
    for address in _peers(config):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BadInputError(f"TF_CONFIG: {address!r} is not host:port")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout).close()
        except ConnectionRefusedError:
            continue
        except OSError as exc:
            raise MissingToolError(f"TF_CONFIG: {address} is unreachable ({exc}); check the "
                                   "address and the network between the machines") from None


def worker_shard(distribution: Any) -> tuple[int, int]:
    """Return (input pipelines, this one's index): each machine reads its own share."""
    resolver = distribution.cluster_resolver
    if resolver is None or not resolver.cluster_spec().jobs:
        return 1, 0
    spec = resolver.cluster_spec()
    counts = {job: spec.num_tasks(job) if job in spec.jobs else 0 for job in TRAINING_JOBS}
    before = counts["chief"] if resolver.task_type == "worker" else 0
    return sum(counts.values()), before + int(resolver.task_id)


def is_chief(distribution: Any) -> bool:
    """Return True on the machine that writes ``state.json`` and the outputs."""
    return bool(distribution.extended.should_checkpoint)
