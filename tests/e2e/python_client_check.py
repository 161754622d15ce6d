#!/usr/bin/env python3
"""Checks of the Python client (client/python/drfm_client.py) against a real drfm-server, run by
tests/e2e/python_client_test.sh after the example:

  - health of the process and of drfm.v1.JobService; an unknown service is NOT_FOUND;
  - the server's errors arrive as grpc.RpcError with its code and sentence: NOT_FOUND (unknown
    dataset, job, model), INVALID_ARGUMENT (bad config, predict with the wrong number of
    columns), ALREADY_EXISTS (a name taken by other content), DATA_LOSS (a wrong sha256 header);
  - uploads are deduplicated by content; shape errors are caught before sending;
  - watch(job, after_sequence) resumes without gaps or repeats; predict over PredictStream
    equals unary Predict; export_model verifies the checksum;
  - with --server-bin: a second server with a token file (UNAUTHENTICATED without the token),
    restarted with SIGTERM while a watch is live: the watch re-attaches and sees every event
    exactly once, through to SUCCEEDED.
Prints "ok: ..." per check and "ALL PYTHON CLIENT CHECKS PASSED" at the end; exits 1 on failure.
"""

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
import drfm_client  # noqa: E402
from drfm_client import datasets_pb2, Job  # noqa: E402


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def expect_error(code, fn, *args, contains=(), **kwargs):
    """Calls fn and returns the grpc.RpcError it must raise with `code`; its details must name
    every string in `contains`."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        if error.code() != code:
            raise AssertionError(f"expected {code.name}, got {error.code().name}: {error.details()}")
        details = error.details() or ""
        for text in contains:
            if text not in details:
                raise AssertionError(f"{code.name} message {details!r} does not mention {text!r}")
        print(f"ok: {code.name}: {details}", flush=True)
        return error
    raise AssertionError(f"expected {code.name}, but the call succeeded")


def blobs(rows, cols, classes, seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, cols)) * 3.0
    y = (np.arange(rows) % classes).astype(np.int32)
    return (means[y] + rng.normal(size=(rows, cols))).astype(np.float32), y


def basic_checks(client, work_dir):
    check(client.health() == "SERVING", "health of the process is SERVING")
    check(client.health("drfm.v1.JobService") == "SERVING", "health of drfm.v1.JobService is SERVING")
    expect_error(grpc.StatusCode.NOT_FOUND, client.health, "no.such.Service")

    # Errors of the server, with its code and message.
    expect_error(grpc.StatusCode.NOT_FOUND, client.fit, "no-such-dataset", layers=1,
                 contains=("no-such-dataset",))
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_dataset, "no-such-dataset")
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_job, "0123456789abcdef")
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_model, "no-such-model")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.fit, "synthetic:rows=60,cols=4,classes=2",
                 layers=-1, contains=("layers",))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.estimate, "synthetic:rows=60,cols=4,classes=2",
                 width=0, contains=("width",))

    # Client-side argument errors: nothing is sent.
    X, y = blobs(240, 6, 3, seed=1)
    for bad in (lambda: client.upload_array("bad", X[0], y), lambda: client.upload_array("bad", X, y[:-1]),
                lambda: client.upload_array("bad", X, y + 0.5), lambda: client.fit("x", no_such_field=1),
                lambda: client.fit("x", kernel="triangle")):
        try:
            bad()
        except (ValueError, TypeError) as error:
            print(f"ok: refused before sending: {error}", flush=True)
        else:
            raise AssertionError("a malformed argument was not refused")

    # Upload, dedup by content, name clash, checksum mismatch.
    first = client.upload_array("py-blobs", X, y)
    check(first.rows == 240 and first.cols == 6 and first.num_classes == 3, "upload stored 240 x 6, 3 classes")
    digest = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
    check(first.sha256 == digest and first.id == "ds-" + digest[:16], "dataset id and sha256 are the content hash")
    again = client.upload_array("py-blobs-again", X.astype(np.float64), y.astype(np.int64))
    check(again.id == first.id, "the same content uploaded twice is one dataset (dedup by hash)")
    X2, y2 = blobs(240, 6, 3, seed=2)
    expect_error(grpc.StatusCode.ALREADY_EXISTS, client.upload_array, "py-blobs", X2, y2, contains=("py-blobs",))
    header = datasets_pb2.DatasetHeader(name="py-corrupt", rows=240, cols=6, sha256="0" * 64)
    requests = [datasets_pb2.UploadDatasetRequest(header=header),
                datasets_pb2.UploadDatasetRequest(chunk=datasets_pb2.DatasetChunk(features=X2.tobytes(),
                                                                                  labels=y2.tobytes()))]
    expect_error(grpc.StatusCode.DATA_LOSS, client.datasets.UploadDataset, iter(requests))
    check(all(d.name != "py-corrupt" for d in client.list_datasets()), "a refused upload is never listed")
    check(any(d.id == first.id for d in client.list_datasets()), "list_datasets shows the upload")

    # A fit watched to the end; a resumed watch repeats nothing and misses nothing.
    job = client.fit(first.id, test=first.id, test_limit=60, layers=2, width=32, seed=5,
                     model_name="py-model", request_id="py-fit-1")
    same = client.fit(first.id, test=first.id, test_limit=60, layers=2, width=32, seed=5,
                      model_name="py-model", request_id="py-fit-1")
    check(same.id == job.id, "the same request_id returns the same job")
    expect_error(grpc.StatusCode.ALREADY_EXISTS, client.fit, first.id, layers=3, model_name="py-model",
                 request_id="py-fit-1")
    events = list(client.watch(job.id))
    sequences = [e.sequence for e in events]
    check(sequences == list(range(1, len(events) + 1)), f"watch delivered sequences 1..{len(events)} in order")
    check(events[-1].state_change.state == Job.SUCCEEDED, "the last event is SUCCEEDED")
    layers = [e.layer_report.layer for e in events if e.HasField("layer_report")]
    check(layers == [1, 2, 3], "layer reports 1, 2 and the readout 3 streamed in order")
    k = len(events) // 2
    resumed = list(client.watch(job.id, after_sequence=k))
    check([e.sequence for e in resumed] == sequences[k:], f"watch after_sequence={k} resumes at {k + 1}")
    check(list(client.watch(job.id, after_sequence=sequences[-1])) == [],
          "watching a finished job after its last event yields nothing and ends")
    expect_error(grpc.StatusCode.NOT_FOUND, lambda: list(client.watch("0123456789abcdef")))
    done = client.get_job(job.id)
    check(done.state == Job.SUCCEEDED and len(done.reports) == 3, "the final Job has 3 reports")

    # An MLP fit through mlp_fit: its request carries the slices, bookkeeping and MlpConfig
    # keywords, and it streams one NetworkReport per measurement.
    request = client.mlp_request(first.id, test=first.id, test_limit=60, depth=1, width=16, epochs=4,
                                 measure_every=2, seed=3, model_name="py-mlp", request_id="py-mlp-1",
                                 labels={"who": "py"})
    check(request.train.dataset == first.id and request.test.limit == 60 and request.config.depth == 1
          and request.config.epochs == 4 and request.model_name == "py-mlp" and request.labels["who"] == "py",
          "mlp_request sets the slices, the MlpConfig keywords and the bookkeeping")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.mlp_fit, first.id, depth=0)
    mlp = client.wait(client.mlp_fit(first.id, test=first.id, test_limit=60, depth=1, width=16, epochs=4,
                                     measure_every=2, seed=3, model_name="py-mlp").id)
    check(mlp.state == Job.SUCCEEDED and [r.epoch for r in mlp.network_reports] == [0, 2, 4],
          "the MLP job succeeds with measurements at epochs 0, 2 and 4")
    check(any(j.id == job.id for j in client.list_jobs(state="succeeded")), "list_jobs(state=succeeded) has it")

    # Predict: unary and streamed batches agree; the readout's test accuracy is reproduced.
    model = client.get_model("py-model")
    check(model.input_dim == 6 and model.classes == 3 and model.layers == 2, "the model is 6 -> 3 with 2 layers")
    labels = client.predict("py-model", X[:60])
    streamed, scores = client.predict("py-model", X[:60], return_scores=True, batch_rows=7)
    check(labels.dtype == np.int32 and labels.shape == (60,), "predict returns 60 int32 labels")
    check(np.array_equal(labels, streamed), "PredictStream in batches of 7 equals one Predict")
    check(scores.shape == (60, 3) and np.array_equal(scores.argmax(axis=1), labels), "scores are 60 x 3, argmax = labels")
    accuracy = float(np.mean(labels == y[:60]))
    check(abs(accuracy - done.reports[-1].test_accuracy) < 1e-9,
          f"predicted accuracy {accuracy:.4f} equals the readout's test accuracy")
    representation = client.predict("py-model", X[:5], layer=1)
    check(representation.shape == (5, 32), "the representation after layer 1 is 5 x 32")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.predict, "py-model", X[:5, :4], contains=("6",))

    # Export: the size and checksum are verified on the way.
    path = os.path.join(work_dir, "py-model.safetensors")
    exported = client.export_model("py-model", path)
    data = open(path, "rb").read()
    first_chunk = next(iter(client.models.ExportModel(drfm_client.models_pb2.ExportModelRequest(name="py-model"))))
    check(exported.name == "py-model" and exported.version == done.model.version, "export_model returns the model")
    check(len(data) == first_chunk.total_bytes and hashlib.sha256(data).hexdigest() == first_chunk.sha256,
          f"export wrote {len(data)} bytes with the sha256 the server announced")
    header_len = int.from_bytes(data[:8], "little")
    check(isinstance(json.loads(data[8:8 + header_len]), dict), "the export is a safetensors file")

    # Clean up through the client.
    client.delete_job(job.id)
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_job, job.id)
    client.delete_model("py-model")
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_model, "py-model")
    client.delete_dataset(first.id)
    expect_error(grpc.StatusCode.NOT_FOUND, client.get_dataset, first.id)


class ServerProcess:
    """drfm-server as a child process; `port` is the one it bound."""

    def __init__(self, binary, data_dir, token_file, log_path, port=0):
        self.args = [binary, "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--data-dir", data_dir,
                     "--threads-per-fit", "1", "--drain-seconds", "0", "--token-file", token_file]
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log)
        line = self.process.stdout.readline().decode()
        self.log.write(line.encode())
        match = re.search(r"listening on port (\d+)", line)
        if not match:
            self.process.kill()
            raise AssertionError(f"drfm-server did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=60)
        self.log.write(rest)
        self.log.close()
        return self.process.returncode


def restart_checks(binary, work_dir):
    token_file = os.path.join(work_dir, "tokens")
    with open(token_file, "w") as f:
        f.write("py-secret-token-0123456789abcdef\n")
    data_dir = os.path.join(work_dir, "restart-data")
    log_path = os.path.join(work_dir, "restart-server.log")
    server = ServerProcess(binary, data_dir, token_file, log_path)
    target = f"127.0.0.1:{server.port}"
    try:
        anonymous = drfm_client.connect(target)
        expect_error(grpc.StatusCode.UNAUTHENTICATED, anonymous.list_jobs, contains=("token",))
        wrong = drfm_client.connect(target, token="not-the-token")
        expect_error(grpc.StatusCode.PERMISSION_DENIED, wrong.list_jobs, contains=("token",))
        client = drfm_client.connect(target, token_file=token_file)
        check(client.list_jobs() == [], "the right token is accepted")

        # A fit long enough to be running when the server is stopped; it is re-queued and starts
        # over after the restart, and the watch follows it across.
        job = client.fit("synthetic:rows=1500,cols=32,classes=4", layers=3, width=256, seed=11,
                         model_name="restarted")
        reconnects = []
        events = []
        restarted = False
        for event in client.watch(job.id, initial_backoff=0.2, max_backoff=1.0,
                                  on_reconnect=lambda attempt, cause, backoff: reconnects.append(attempt)):
            events.append(event)
            if (not restarted and event.HasField("state_change")
                    and event.state_change.state == Job.RUNNING):
                code = server.stop()
                check(code == 0, f"drfm-server exited {code} on SIGTERM with a watch open")
                server = None
                server = ServerProcess(binary, data_dir, token_file, log_path, port=int(target.rsplit(":", 1)[1]))
                restarted = True
        check(restarted and len(reconnects) >= 1, f"the watch re-attached ({len(reconnects)} attempts)")
        sequences = [e.sequence for e in events]
        check(sequences == list(range(1, len(events) + 1)),
              f"across the restart every event arrived exactly once (1..{len(events)})")
        check(events[-1].state_change.state == Job.SUCCEEDED, "the re-queued job SUCCEEDED after the restart")
        requeued = [e for e in events if e.HasField("state_change") and e.state_change.state == Job.QUEUED]
        check(len(requeued) == 2, "the job was queued again after the restart")
        check(len(client.get_job(job.id).reports) == 4, "the final Job has 3 layers + the readout")
    finally:
        if server is not None:
            code = server.stop()
            if code != 0:
                raise AssertionError(f"drfm-server exited {code} on SIGTERM")
    print(f"ok: drfm-server exited 0 on SIGTERM", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--server-bin", help="drfm-server binary for the restart checks")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="drfm-py-check-")
    with drfm_client.connect(args.server) as client:
        basic_checks(client, work_dir)
    if args.server_bin:
        restart_checks(args.server_bin, work_dir)
    print("ALL PYTHON CLIENT CHECKS PASSED", flush=True)
    return 0


if __name__ == "__main__":
    # A timeout's SIGTERM unwinds through the finally blocks, so no child server outlives us.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"FAILED: terminated (signal {signum})"))
    try:
        sys.exit(main())
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
