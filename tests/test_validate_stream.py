"""Streaming validation: per-image records give the whole set's numbers, workers and Ray give
the same records as one process, and a killed run resumes from the batches it kept."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import MissingToolError
from edgeq.images import inception_preprocess, list_images
from quant.validate import metrics, stream

MODEL = "mobilenet_v1_0.25_128_quant.tflite"  # the smallest shared classifier: fast to run


def _outputs(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(rows, classes)).astype(np.float32)
    return reference, reference + rng.normal(scale=0.3, size=reference.shape).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_batched_records_summarize_like_the_whole_set(batch):
    """Any batch size gives exactly the numbers of the metrics on the whole arrays."""
    float_out, int8_out = _outputs(300, 12, seed=batch)
    labels = np.random.default_rng(1).integers(0, 12, 300)
    parts = [metrics.classification_records(int8_out[i:i + batch], float_out[i:i + batch])
             for i in range(0, 300, batch)]
    summary = metrics.classification_summary(stream.concat_records(parts), labels)
    whole = metrics.compare_outputs(float_out, int8_out)
    for key in ("agreement", "top5_overlap", "kl_mean"):
        assert summary[key] == whole[key], key
    assert summary["output_sqnr_db"] == pytest.approx(whole["output_sqnr_db"], rel=1e-12)
    assert summary["int8"] == metrics.accuracies(int8_out, labels)
    assert summary["float"] == metrics.accuracies(float_out, labels)
    assert summary["disagreements"] == metrics.disagreements(float_out, int8_out)


@pytest.fixture(scope="module")
def imagenet(shared_data: Path):
    images = list_images(shared_data / "imagenet_val1300" / "images",
                         shared_data / "imagenet_val1300" / "labels.csv").head(96)
    models = stream.WorkerModels(shared_data / "coral" / MODEL, None, inception_preprocess(128),
                                 threads=1)
    return images, models, [(batch,) for batch in stream.batched(list(images.paths), 32)]


def test_two_worker_processes_give_the_records_of_one(imagenet):
    images, models, batches = imagenet
    one = stream.run_batches("classify", batches, models, stream.Engine(1), None,
                             progress=False)
    two = stream.run_batches("classify", batches, models, stream.Engine(2), None,
                             progress=False)
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)
    top1 = metrics.classification_summary(one, np.asarray(images.labels) + 1)["int8"]["top1"]
    assert 0.2 < top1 < 0.7  # MobileNet v1 0.25 128 is published at 41.4% on ImageNet


def test_a_killed_run_resumes_from_the_kept_batches(imagenet, tmp_path, monkeypatch):
    images, models, batches = imagenet
    identity = stream.run_identity(models, images.paths, "classify", None)
    first = stream.run_batches("classify", batches, models, stream.Engine(1),
                               stream.BatchStore(tmp_path, identity), progress=False)
    (tmp_path / "batch_000001.npz").unlink()  # as if killed before the second batch ended
    ran = []
    classify = stream.Worker.classify
    monkeypatch.setattr(stream.Worker, "classify",
                        lambda self, paths: ran.append(paths[0]) or classify(self, paths))
    again = stream.run_batches("classify", batches, models, stream.Engine(1),
                               stream.BatchStore(tmp_path, identity), progress=False)
    assert ran == [batches[1][0][0]]
    assert all(np.array_equal(first[k], again[k]) for k in first)
    other = {**identity, "images": 1}  # another run: the kept batches are not reused
    stream.BatchStore(tmp_path, other)
    assert not list(tmp_path.glob("batch_*.npz"))


def test_ray_gives_the_records_of_one_process(imagenet):
    pytest.importorskip("ray")
    _, models, batches = imagenet
    local = stream.run_batches("classify", batches, models, stream.Engine(1), None,
                               progress=False)
    on_ray = stream.run_batches("classify", batches, models, stream.Engine(2, ray=True), None,
                                progress=False)
    assert all(np.array_equal(local[k], on_ray[k]) for k in local)


def test_ray_missing_says_how_to_install(imagenet, monkeypatch):
    _, models, batches = imagenet
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingToolError, match=r"pip install 'edgetpu-quant\[ray\]'"):
        stream.run_batches("classify", batches, models, stream.Engine(2, ray=True), None,
                           progress=False)


def test_an_unreachable_ray_cluster_is_exit_3_quickly(shared_data, tmp_path):
    """validate-quant --engine ray --ray-address of a closed port stops with one line, exit
    3, instead of Ray's minutes of retries."""
    import socket

    from quant.cli.validate import main

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    images = shared_data / "imagenet_val1300"
    code = main(["--int8", str(shared_data / "coral" / MODEL), "--data", str(images / "images"),
                 "--labels", str(images / "labels.csv"), "--limit", "130", "--engine", "ray",
                 "--ray-address", f"127.0.0.1:{port}", "--latency-runs", "0",
                 "--out", str(tmp_path)])
    assert code == 3
