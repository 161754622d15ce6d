"""A thin Python client of a drfm server (proto/drfm/v1, API.md).

The gRPC stubs are generated from proto/ by client/python/generate.sh (Debian's protoc and
grpc_python_plugin) and are never committed. This module finds them, in order: already
importable as ``drfm.v1``; in the directory named by ``$DRFM_PYTHON_STUBS``; in
``<repo>/build/python``; else it generates them into a temporary directory (removed at exit).

    import drfm_client
    client = drfm_client.connect("localhost:50051", token=None)
    ds = client.upload_array("blobs", X, y)               # X: (n, d) float32, y: (n,) int32
    job = client.fit(ds.id, test=ds.id, layers=2, width=64, model_name="blobs-model")
    for event in client.watch(job.id):                     # re-attaches by itself after a drop
        if event.HasField("layer_report"):
            print(event.layer_report.layer, event.layer_report.input.nc1)
    labels = client.predict("blobs-model", X)               # np.ndarray of int32

    mlp = client.mlp_fit(ds.id, test=ds.id, depth=2, width=64, epochs=40, learning_rate=1e-3,
                         model_name="blobs-mlp")                # DNN.md
    for event in client.watch(mlp.id):
        if event.HasField("network_report"):
            r = event.network_report
            print(r.epoch, [(l.layer, l.none.nc1, l.right.nc1, l.nfa_correlation) for l in r.layers])
    client.export_model("blobs-mlp", "mlp.safetensors")
    client.import_model("blobs-mlp-copy", "mlp.safetensors")
    report = client.wait(client.analyze("blobs-mlp-copy", ds.id).id).network_reports[0]

Errors are the server's: ``grpc.RpcError`` with ``.code()`` (e.g. ``grpc.StatusCode.NOT_FOUND``)
and ``.details()`` (the server's sentence). Arguments that cannot be sent (a 3-d array, a label
count that differs from the row count, an unknown config field) raise ``ValueError`` /
``TypeError`` before anything is sent.
"""

import atexit
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
_STUB_MODULES = ("common_pb2", "config_pb2", "reports_pb2", "datasets_pb2", "jobs_pb2",
                 "models_pb2", "datasets_pb2_grpc", "jobs_pb2_grpc", "models_pb2_grpc")


def _import_stubs():
    modules = {}
    for name in _STUB_MODULES:
        modules[name] = importlib.import_module("drfm.v1." + name)
    return modules


def _forget_stubs():
    for name in list(sys.modules):
        if name == "drfm" or name.startswith("drfm."):
            del sys.modules[name]


def _has_stubs(directory):
    return bool(directory) and os.path.isfile(os.path.join(directory, "drfm", "v1", "jobs_pb2_grpc.py"))


def _load_stubs():
    try:
        return _import_stubs()
    except ImportError:
        _forget_stubs()
    for directory in (os.environ.get("DRFM_PYTHON_STUBS"), os.path.join(_REPO, "build", "python")):
        if _has_stubs(directory):
            sys.path.insert(0, directory)
            return _import_stubs()
    generate = os.path.join(_HERE, "generate.sh")
    if os.path.isfile(generate):
        directory = tempfile.mkdtemp(prefix="drfm-python-stubs-")
        atexit.register(shutil.rmtree, directory, True)
        done = subprocess.run(["bash", generate, directory], capture_output=True, text=True)
        if done.returncode == 0 and _has_stubs(directory):
            sys.path.insert(0, directory)
            return _import_stubs()
        raise ImportError("drfm_client: generating the gRPC stubs failed: " + done.stderr.strip())
    raise ImportError("drfm_client: the drfm.v1 stubs are not importable; generate them with "
                      "client/python/generate.sh OUT_DIR and set DRFM_PYTHON_STUBS=OUT_DIR")


_stubs = _load_stubs()
common_pb2 = _stubs["common_pb2"]
config_pb2 = _stubs["config_pb2"]
reports_pb2 = _stubs["reports_pb2"]
datasets_pb2 = _stubs["datasets_pb2"]
jobs_pb2 = _stubs["jobs_pb2"]
models_pb2 = _stubs["models_pb2"]
datasets_pb2_grpc = _stubs["datasets_pb2_grpc"]
jobs_pb2_grpc = _stubs["jobs_pb2_grpc"]
models_pb2_grpc = _stubs["models_pb2_grpc"]

Job = jobs_pb2.Job
TERMINAL_STATES = frozenset((Job.SUCCEEDED, Job.FAILED, Job.CANCELLED))
# Codes after which a watch re-attaches (the connection or the server went away, not the
# request); the same set as the C++ client (client/client.cc IsRetryable).
RETRYABLE_CODES = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                             grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED,
                             grpc.StatusCode.DEADLINE_EXCEEDED))
# Bytes of features per upload chunk / predict request: well under gRPC's 4 MiB default.
CHUNK_BYTES = 1 << 20


def state_name(state):
    """"SUCCEEDED" for Job.SUCCEEDED, etc."""
    return Job.State.Name(state)


def is_terminal(state):
    return state in TERMINAL_STATES


class WatchLost(ConnectionError):
    """The event stream of a job could not be re-attached; ``cause`` is the last error."""

    def __init__(self, message, cause=None, last_sequence=0):
        super().__init__(message)
        self.cause = cause
        self.last_sequence = last_sequence


def _features(X, name="X"):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-d array of shape (rows >= 1, cols >= 1); got shape {X.shape}")
    return np.ascontiguousarray(X, dtype="<f4")


def _labels(y, rows):
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != rows:
        raise ValueError(f"y must be a 1-d array of {rows} labels (one per row of X); got shape {y.shape}")
    labels = np.ascontiguousarray(y, dtype="<i4")
    if not np.array_equal(labels, y):
        raise ValueError("y must hold integer class labels that fit in int32")
    return labels


def _set_fields(message, fields, what):
    """Sets `fields` on `message`; enum fields also take their value names ("laplace")."""
    descriptor = message.DESCRIPTOR
    for key, value in fields.items():
        if value is None:
            continue
        field = descriptor.fields_by_name.get(key)
        if field is None:
            allowed = ", ".join(f.name for f in descriptor.fields)
            raise TypeError(f"{what} has no field {key!r}; its fields are: {allowed}")
        if field.enum_type is not None and isinstance(value, str):
            enum_value = field.enum_type.values_by_name.get(value.upper())
            if enum_value is None:
                allowed = ", ".join(v.name.lower() for v in field.enum_type.values if v.number != 0)
                raise ValueError(f"{what}.{key} must be one of {allowed}; got {value!r}")
            value = enum_value.number
        setattr(message, key, value)
    return message


def _slice(dataset, limit=0, offset=0):
    if isinstance(dataset, common_pb2.DatasetSlice):
        return dataset
    if isinstance(dataset, datasets_pb2.Dataset):
        dataset = dataset.id
    return common_pb2.DatasetSlice(dataset=dataset, limit=limit or 0, offset=offset or 0)


def _submission(request_type, config_name, train, test, train_limit, train_offset, test_limit,
                test_offset, model_name, request_id, priority, labels, config, config_fields):
    """A SubmitFitRequest or SubmitMlpFitRequest (`request_type`) with its slices, bookkeeping
    and config (`config`, then the `config_fields` keywords of the `config_name` message)."""
    request = request_type(train=_slice(train, train_limit, train_offset), model_name=model_name,
                           request_id=request_id, priority=priority)
    if test is not None:
        request.test.CopyFrom(_slice(test, test_limit, test_offset))
    if config is not None:
        request.config.CopyFrom(config)
    _set_fields(request.config, config_fields, config_name)
    for key, value in (labels or {}).items():
        request.labels[key] = value
    return request


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_health_request(service):
    # grpc.health.v1.HealthCheckRequest{string service = 1}; Debian ships no Python health stubs.
    data = service.encode()
    return b"\x0a" + _encode_varint(len(data)) + data if data else b""


_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _decode_health_response(data):
    # grpc.health.v1.HealthCheckResponse{ServingStatus status = 1} (a varint).
    status, i = 0, 0
    while i < len(data):
        key = data[i]
        i += 1
        if key != 0x08:
            break
        shift, value = 0, 0
        while i < len(data):
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        status = value
    return _SERVING_STATUS.get(status, str(status))


class Client:
    """The calls of a drfm server over one channel. Unary calls carry ``timeout`` seconds."""

    def __init__(self, channel, token=None, timeout=30.0):
        self.channel = channel
        self.timeout = timeout
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self.datasets = datasets_pb2_grpc.DatasetServiceStub(channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self._health = channel.unary_unary("/grpc.health.v1.Health/Check",
                                           request_serializer=lambda data: data,
                                           response_deserializer=_decode_health_response)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        return method(request, timeout=self.timeout, metadata=self._metadata)

    # --- health -------------------------------------------------------------------------------

    def health(self, service="", wait_for_ready=False):
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... ("" = the process)."""
        return self._health(_encode_health_request(service), timeout=self.timeout,
                            metadata=self._metadata, wait_for_ready=wait_for_ready)

    # --- datasets -----------------------------------------------------------------------------

    def upload_array(self, name, X, y, num_classes=None, chunk_bytes=CHUNK_BYTES):
        """Uploads features X (rows x cols, sent as float32) and labels y (rows, sent as int32)
        as dataset `name`, in chunks, with the SHA-256 of the payload in the header (the server
        refuses a mismatch with DATA_LOSS). Returns the stored Dataset; content that is already
        stored returns that dataset, whatever its name."""
        features = _features(X)
        labels = _labels(y, features.shape[0])
        feature_bytes = features.tobytes()
        label_bytes = labels.tobytes()
        digest = hashlib.sha256(feature_bytes)
        digest.update(label_bytes)
        header = datasets_pb2.DatasetHeader(name=name, rows=features.shape[0], cols=features.shape[1],
                                            sha256=digest.hexdigest())
        if num_classes is not None:
            header.num_classes = num_classes

        def requests():
            yield datasets_pb2.UploadDatasetRequest(header=header)
            view = memoryview(feature_bytes)
            for offset in range(0, len(view), chunk_bytes):
                yield datasets_pb2.UploadDatasetRequest(
                    chunk=datasets_pb2.DatasetChunk(features=bytes(view[offset:offset + chunk_bytes])))
            view = memoryview(label_bytes)
            for offset in range(0, len(view), chunk_bytes):
                yield datasets_pb2.UploadDatasetRequest(
                    chunk=datasets_pb2.DatasetChunk(labels=bytes(view[offset:offset + chunk_bytes])))

        return self.datasets.UploadDataset(requests(), metadata=self._metadata)

    def get_dataset(self, dataset):
        return self._call(self.datasets.GetDataset, datasets_pb2.GetDatasetRequest(dataset=dataset))

    def list_datasets(self):
        """Every dataset (all pages), newest first, built-ins included."""
        out, token = [], ""
        while True:
            page = self._call(self.datasets.ListDatasets,
                              datasets_pb2.ListDatasetsRequest(page_size=1000, page_token=token))
            out.extend(page.datasets)
            token = page.next_page_token
            if not token:
                return out

    def delete_dataset(self, dataset):
        self._call(self.datasets.DeleteDataset, datasets_pb2.DeleteDatasetRequest(dataset=dataset))

    # --- jobs ---------------------------------------------------------------------------------

    def fit_request(self, train, test=None, *, train_limit=0, train_offset=0, test_limit=0,
                    test_offset=0, model_name="", request_id="", priority=0, labels=None,
                    config=None, **config_fields):
        """The SubmitFitRequest of `fit`. `train` / `test`: a dataset id or name, a Dataset or a
        DatasetSlice. Config: a FitConfig, and/or FitConfig fields as keywords (layers=2,
        kernel="gaussian", width=64, seed=1, ...); unset fields take the server's defaults."""
        return _submission(jobs_pb2.SubmitFitRequest, "FitConfig", train, test, train_limit,
                           train_offset, test_limit, test_offset, model_name, request_id,
                           priority, labels, config, config_fields)

    def fit(self, train, test=None, **kwargs):
        """Submits a Deep RFM fit (arguments as fit_request); returns the queued Job."""
        return self._call(self.jobs.SubmitFit, self.fit_request(train, test, **kwargs))

    def estimate(self, train, test=None, **kwargs):
        """The FitEstimate (memory bytes, flops) of the fit; no job is created."""
        return self._call(self.jobs.EstimateFit, self.fit_request(train, test, **kwargs))

    def mlp_request(self, train, test=None, *, train_limit=0, train_offset=0, test_limit=0,
                    test_offset=0, model_name="", request_id="", priority=0, labels=None,
                    config=None, **config_fields):
        """The SubmitMlpFitRequest of `mlp_fit`: as fit_request, with MlpConfig fields as keywords
        (depth=2, width=64, init_gain=0.1, learning_rate=1e-3, epochs=40, batch_size=128,
        measure_every=10, seed=1, ...); unset fields take the server's defaults (DNN.md)."""
        return _submission(jobs_pb2.SubmitMlpFitRequest, "MlpConfig", train, test, train_limit,
                           train_offset, test_limit, test_offset, model_name, request_id,
                           priority, labels, config, config_fields)

    def mlp_fit(self, train, test=None, **kwargs):
        """Submits an MLP fit (arguments as mlp_request); returns the queued Job. Its events
        carry a NetworkReport per measurement (event.network_report)."""
        return self._call(self.jobs.SubmitMlpFit, self.mlp_request(train, test, **kwargs))

    def analyze(self, model, data, *, version=None, data_limit=0, data_offset=0, request_id="",
                priority=0, labels=None):
        """Submits a measurement of the stored MLP `model` (latest version unless `version`) on
        `data` (a dataset id or name, a Dataset or a DatasetSlice); returns the queued Job, whose
        one NetworkReport arrives as an event and in Job.network_reports."""
        request = jobs_pb2.SubmitAnalysisRequest(model=model,
                                                 data=_slice(data, data_limit, data_offset),
                                                 request_id=request_id, priority=priority)
        if version is not None:
            request.version = version
        for key, value in (labels or {}).items():
            request.labels[key] = value
        return self._call(self.jobs.SubmitAnalysis, request)

    def get_job(self, job_id):
        return self._call(self.jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(self, state=None, include_reports=False):
        """Every job (all pages), newest first; `state` filters (Job.SUCCEEDED or "succeeded")."""
        request = jobs_pb2.ListJobsRequest(page_size=1000, include_reports=include_reports)
        _set_fields(request, {"state": state}, "ListJobsRequest")
        out = []
        while True:
            page = self._call(self.jobs.ListJobs, request)
            out.extend(page.jobs)
            if not page.next_page_token:
                return out
            request.page_token = page.next_page_token

    def cancel_job(self, job_id):
        return self._call(self.jobs.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))

    def delete_job(self, job_id):
        self._call(self.jobs.DeleteJob, jobs_pb2.DeleteJobRequest(job_id=job_id))

    def watch(self, job_id, after_sequence=0, *, max_reconnects=12, initial_backoff=0.25,
              max_backoff=5.0, on_reconnect=None):
        """Yields every JobEvent of `job_id` with a sequence above `after_sequence`, in order,
        ending after the terminal state change. When the stream drops (the server restarts, the
        network fails) it re-attaches after a backoff from the last sequence it yielded, so no
        event is missed or yielded twice. `on_reconnect(attempt, error, backoff_seconds)` is
        called before each re-attach. Errors of the request itself (NOT_FOUND, ...) are raised at
        once as grpc.RpcError; WatchLost after `max_reconnects` attempts in a row that delivered
        nothing."""
        last = after_sequence
        failures = 0
        backoff = initial_backoff
        while True:
            delivered = False
            stream = self.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=last),
                                        metadata=self._metadata)
            try:
                for event in stream:
                    if event.sequence <= last:  # never repeat an event, even if a server did
                        continue
                    last = event.sequence
                    delivered = True
                    yield event
                    if event.HasField("state_change") and is_terminal(event.state_change.state):
                        return
                cause = None  # a clean end before the terminal event (e.g. a server shutdown)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE_CODES:
                    raise
                cause = error
            finally:
                stream.cancel()
            if cause is None and not delivered:
                # Nothing after `last` and a clean end: a job that had already ended before
                # `last` (after_sequence at or past its terminal event) has nothing more to say.
                job = self.get_job(job_id)
                if is_terminal(job.state) and last >= job.last_event_sequence:
                    return
            if delivered:
                failures, backoff = 0, initial_backoff
            failures += 1
            if failures > max_reconnects:
                what = f"{cause.code().name}: {cause.details()}" if cause else "the stream ended early"
                raise WatchLost(f"lost the event stream of job {job_id} after {max_reconnects} "
                                f"attempts to re-attach ({what})", cause, last)
            if on_reconnect is not None:
                on_reconnect(failures, cause, backoff)
            time.sleep(backoff)
            backoff = min(2 * backoff, max_backoff)

    def wait(self, job_id, after_sequence=0, on_event=None, **watch_options):
        """Watches `job_id` to its end (calling on_event(event) for each) and returns the final
        Job."""
        for event in self.watch(job_id, after_sequence, **watch_options):
            if on_event is not None:
                on_event(event)
        return self.get_job(job_id)

    # --- models -------------------------------------------------------------------------------

    def get_model(self, name, version=None):
        request = models_pb2.GetModelRequest(name=name)
        if version is not None:
            request.version = version
        return self._call(self.models.GetModel, request)

    def list_models(self, name=""):
        out, token = [], ""
        while True:
            page = self._call(self.models.ListModels,
                              models_pb2.ListModelsRequest(name=name, page_size=1000, page_token=token))
            out.extend(page.models)
            token = page.next_page_token
            if not token:
                return out

    def delete_model(self, name, version=None):
        request = models_pb2.DeleteModelRequest(name=name)
        if version is not None:
            request.version = version
        self._call(self.models.DeleteModel, request)

    def export_model(self, name, path, version=None):
        """Writes the model as a safetensors file to `path`, checking the size and SHA-256 the
        server announces; returns the Model."""
        request = models_pb2.ExportModelRequest(name=name)
        if version is not None:
            request.version = version
        digest, model, total, size = hashlib.sha256(), None, 0, 0
        partial = path + ".part"
        try:
            with open(partial, "wb") as out:
                for chunk in self.models.ExportModel(request, metadata=self._metadata):
                    if model is None:
                        model, total, expected = chunk.model, chunk.total_bytes, chunk.sha256
                    if chunk.offset != size:
                        raise IOError(f"export of {name}: chunk at offset {chunk.offset}, expected {size}")
                    out.write(chunk.data)
                    digest.update(chunk.data)
                    size += len(chunk.data)
            if model is None or size != total or digest.hexdigest() != expected:
                raise IOError(f"export of {name}: got {size} of {total} bytes, sha256 "
                              f"{digest.hexdigest()} (expected {expected if model else '?'})")
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return model

    def import_model(self, name, path, chunk_bytes=CHUNK_BYTES):
        """Stores the safetensors file at `path` (DNN.md: layers.0.weight, ... as out x in F32
        tensors, optional input.mean / input.std) as the next version of MLP `name`, streamed in
        chunks with its size and SHA-256 in the header. Returns the stored Model; a file the
        server refuses raises grpc.RpcError (INVALID_ARGUMENT with the reason)."""
        with open(path, "rb") as f:
            data = f.read()
        header = models_pb2.ImportModelHeader(name=name, size_bytes=len(data),
                                              sha256=hashlib.sha256(data).hexdigest())

        def requests():
            yield models_pb2.ImportModelRequest(header=header)
            view = memoryview(data)
            for offset in range(0, len(view), chunk_bytes):
                yield models_pb2.ImportModelRequest(chunk=bytes(view[offset:offset + chunk_bytes]))

        return self.models.ImportModel(requests(), metadata=self._metadata)

    def predict(self, model, X, *, version=None, return_scores=False, layer=0, batch_rows=None):
        """Labels of the rows of X (np.ndarray of int32, one per row, in order); with
        return_scores, (labels, scores) with scores rows x classes; with layer >= 1, the
        representation after that layer (rows x width, float32). Batches of about 1 MiB are sent
        over PredictStream when X is larger than one batch."""
        features = _features(X)
        rows, cols = features.shape
        if batch_rows is None:
            batch_rows = max(1, CHUNK_BYTES // (4 * cols))

        def request(start, stop):
            r = models_pb2.PredictRequest(model=model, rows=stop - start, cols=cols,
                                          features=features[start:stop].tobytes(),
                                          return_scores=return_scores, layer=layer)
            if version is not None:
                r.version = version
            return r

        if rows <= batch_rows:
            responses = [self._call(self.models.Predict, request(0, rows))]
        else:
            if version is None:  # every batch from the same version
                version = self.get_model(model).version
            requests = (request(s, min(s + batch_rows, rows)) for s in range(0, rows, batch_rows))
            responses = list(self.models.PredictStream(requests, metadata=self._metadata))
        if layer >= 1:
            width = responses[0].representation_cols
            return np.concatenate([np.frombuffer(r.representation, dtype="<f4").reshape(-1, width)
                                   for r in responses])
        labels = np.concatenate([np.asarray(r.labels, dtype=np.int32) for r in responses])
        if len(labels) != rows:
            raise IOError(f"the server answered {len(labels)} of {rows} rows")
        if not return_scores:
            return labels
        classes = responses[0].classes
        scores = np.concatenate([np.asarray(r.scores, dtype=np.float32).reshape(-1, classes)
                                 for r in responses])
        return labels, scores


def connect(target, token=None, *, token_file=None, timeout=30.0, root_certificates=None,
            tls=False, max_receive_message_bytes=256 << 20):
    """A Client of the drfm server at `target` (HOST:PORT). `token` (or the first line of
    `token_file`) is sent as "authorization: Bearer TOKEN" with every call. TLS when `tls` or
    `root_certificates` (PEM bytes) is given; plaintext otherwise. The channel connects lazily:
    an unreachable server shows up as UNAVAILABLE on the first call."""
    if token_file is not None:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    options = [("grpc.max_receive_message_length", max_receive_message_bytes)]
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return Client(channel, token=token, timeout=timeout)
