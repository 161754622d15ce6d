#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (deterministic; numpy
only). Each seed is small: valid or nearly valid inputs the fuzzer mutates from. Run it again after
changing a format; the files are committed. The first byte of several targets' inputs is a mode
byte (see the comment at the top of fuzz/<target>_fuzz.cc)."""
import gzip
import io
import json
import os
import random
import struct
import sys
import zlib

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
DATA_MARK = b"\n@@DATA@@\n"


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def idx(array, type_code, be_dtype):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(be_dtype).tobytes()


def npy_seeds():
    write("npy", "f4_2x3", npy(np.arange(6, dtype="<f4").reshape(2, 3) / 4))
    write("npy", "f8_fortran_3x2", npy(np.asfortranarray(np.arange(6, dtype="<f8").reshape(3, 2))))
    write("npy", "u1_4x2x2", npy(np.arange(16, dtype="u1").reshape(4, 2, 2) * 16))
    write("npy", "i8_labels", npy(np.array([0, 1, 2, 1, 0], dtype="<i8")))
    write("npy", "be_f4_2x2", npy(np.array([[1, -2], [3.5, 0]], dtype=">f4")))
    write("npy", "v2_i4_3x1", npy(np.array([[1], [0], [2]], dtype="<i4"), version=(2, 0)))
    write("npy", "i2_1d", npy(np.array([3, -4, 5], dtype="<i2")))


def idx_seeds():
    images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2) * 30
    write("idx", "plain_ubyte_images", b"\x00" + idx(images, 0x08, ">u1"))
    write("idx", "plain_ubyte_labels", b"\x00" + idx(np.array([0, 3, 9], dtype=np.uint8), 0x08, ">u1"))
    write("idx", "plain_f8_2x2", b"\x00" + idx(np.array([[1.5, -2], [0, 4]]), 0x0E, ">f8"))
    # bit 0 set: the harness gzips the rest (level (0x61 >> 4) % 10 = 6).
    write("idx", "gz_f4_2x3", b"\x61" + idx(np.arange(6, dtype=np.float32).reshape(2, 3), 0x0D, ">f4"))
    # bits 0 and 1 set: two gzip members (level 9).
    write("idx", "gz2_i2_labels", b"\x93" + idx(np.array([1, 2, 0, 7], dtype=np.int16), 0x0B, ">i2"))
    # A real gzip file given as it is (bit 0 clear): the gunzip path of the sniffing readers.
    write("idx", "raw_gzip_i4", b"\x00" + gzip.compress(idx(np.array([[5, 6], [7, 8]], dtype=np.int32), 0x0C, ">i4"), mtime=0))


def csv_seeds():
    # First byte: label column = byte % 8 - 2 (1 -> -1, the last column; 2 -> 0; 3 -> 1).
    write("csv", "header_last", b"\x01a,b,label\n1,2,0\n3.5,-1e3,1\n")
    write("csv", "bom_crlf_quoted", b"\x02\xef\xbb\xbf0, 1.5 ,\"2\"\r\n1,2,3\r\n\r\n")
    write("csv", "labels_only", b"\x01y\n1.0\n2\n3.0\n")
    write("csv", "quoted_header", b"\x03\"x\",\"y\",\"z\"\n\"1\",2,3\n4,5,6\n")


def model_file(header, data):
    text = json.dumps(header, separators=(",", ":")).encode()
    out = b"DRFMMODL" + struct.pack("<IIQ", 1, 0, len(text)) + text + struct.pack("<Q", len(data)) + data
    return out + struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF), text


def deep_rfm(dtype, standardize, maps, kernel, rng):
    """A hand-made Deep RFM model: input 3, layers of the given feature maps (width 4), readout of
    5 rows, 2 classes; tensors laid out as DeepRfmModel::Serialize does."""
    d, width, n, classes = 3, 4, 5, 2
    name = "float32" if dtype == np.float32 else "float64"
    table, blobs, offset = {}, [], 0

    def add(tensor_name, array):
        nonlocal offset
        array = np.ascontiguousarray(array, dtype=dtype)
        table[tensor_name] = {"dtype": "F32" if dtype == np.float32 else "F64",
                              "shape": list(array.shape), "offset": offset}
        blobs.append(array.tobytes())
        offset += array.nbytes

    if standardize:
        add("input.mean", rng.standard_normal(d))
        add("input.std", rng.uniform(0.5, 2, d))
    layers, dim = [], d
    for i, fmap in enumerate(maps):
        add(f"layers.{i}.projection", np.eye(dim) + 0.1 * rng.standard_normal((dim, dim)))
        add(f"layers.{i}.weights", rng.standard_normal((width, dim)))
        if fmap == "cosine":
            add(f"layers.{i}.bias", rng.uniform(0, 6.28, width))
        layers.append({"feature_map": fmap, "width": width})
        dim = width
    x = rng.standard_normal((n, dim))
    add("readout.x", x / np.linalg.norm(x, axis=1, keepdims=True))
    add("readout.alpha", rng.standard_normal((n, classes)))
    header = {"format": "drfm-deep-rfm", "precision": name,
              "config": {"layers": len(maps), "kernel": kernel, "bandwidth": 2.0, "ridge": 0.001,
                         "feature_map": maps[0] if maps else "relu", "width": width,
                         "precision": name, "standardize": standardize, "seed": 3},
              "input_dim": d, "num_classes": classes, "standardize": standardize,
              "kernel": kernel, "bandwidth": 2.0, "layers": layers, "tensors": table}
    return header, b"".join(blobs)


def model_seeds():
    rng = np.random.default_rng(1)
    header, data = deep_rfm(np.float32, True, ["relu"], "laplace", rng)
    file, text = model_file(header, data)
    write("model", "f32_relu_file", b"\x00" + file)
    write("model", "f32_relu_crc_fixed", b"\x02" + file)
    write("model", "f32_relu_framed", b"\x01" + text + DATA_MARK + data)
    header, data = deep_rfm(np.float64, False, ["cosine", "relu"], "gaussian", rng)
    file, text = model_file(header, data)
    write("model", "f64_cosine_framed", b"\x01" + text + DATA_MARK + data)
    header, data = deep_rfm(np.float32, False, [], "laplace", rng)
    file, text = model_file(header, data)
    write("model", "f32_readout_only_file", b"\x00" + file)


def safetensors_parts(weights, mean=None, std=None, metadata=None):
    header, blobs, offset = {}, [], 0
    named = []
    if mean is not None:
        named += [("input.mean", mean), ("input.std", std)]
    named += [(f"layers.{i}.weight", w) for i, w in enumerate(weights)]
    for name, array in named:
        array = np.ascontiguousarray(array, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        blobs.append(array.tobytes())
        offset += array.nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return text, b"".join(blobs)


def safetensors_seeds():
    rng = np.random.default_rng(2)
    meta = {"format": "drfm-mlp", "row_normalize": "true",
            "config": json.dumps({"depth": 1, "width": 5, "epochs": 2, "seed": 4})}
    text, data = safetensors_parts([rng.standard_normal((5, 3)), rng.standard_normal((2, 5))],
                                   rng.standard_normal(3), rng.uniform(0.5, 2, 3), meta)
    st = struct.pack("<Q", len(text)) + text + data
    write("safetensors", "mlp_file", b"\x00" + st)
    write("safetensors", "mlp_framed", b"\x01" + text + DATA_MARK + data)
    stored = b"DRFMMLP\x00" + struct.pack("<II", 1, 0) + st
    stored += struct.pack("<I", zlib.crc32(stored) & 0xFFFFFFFF)
    write("safetensors", "mlp_stored", b"\x03" + stored)
    text, data = safetensors_parts([rng.standard_normal((3, 4))], metadata={"row_normalize": "false"})
    write("safetensors", "linear_framed_stored", b"\x02" + text + DATA_MARK + data)


# Protobuf wire format, enough for the request seeds.
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def f_int(field, n):
    return varint(field << 3) + varint(n)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def f_double(field, x):
    return varint(field << 3 | 1) + struct.pack("<d", x)


def request_seeds():
    synthetic = "synthetic:rows=60,cols=5,classes=3"
    fit = f_bytes(1, f_bytes(1, synthetic)) + f_bytes(3, f_int(1, 2) + f_int(7, 64) + f_double(3, 1.5) + f_int(2, 2))
    write("request", "submit_fit_synthetic", b"\x00" + fit)
    fit = (f_bytes(1, f_bytes(1, "up") + f_int(2, 10)) + f_bytes(2, f_bytes(1, "up") + f_int(3, 2)) +
           f_bytes(3, f_int(6, 2) + f_int(7, 0) + f_int(12, 2) + f_int(15, 9)) + f_bytes(4, "model-1") +
           f_bytes(5, "req-1") + f_int(6, 5) + f_bytes(7, f_bytes(1, "k") + f_bytes(2, "v")))
    write("request", "submit_fit_uploaded", b"\x00" + fit)
    mlp = f_bytes(1, f_bytes(1, "synthetic:rows=30,cols=4,classes=2")) + f_bytes(3, f_int(1, 2) + f_int(2, 16) + f_int(5, 3))
    write("request", "submit_mlp", b"\x01" + mlp)
    write("request", "submit_analysis", b"\x02" + f_bytes(1, "m") + f_bytes(2, f_bytes(1, "up")))
    features = np.arange(8, dtype="<f4").tobytes()
    write("request", "predict_scores", b"\x03" + f_bytes(1, "m") + f_int(3, 2) + f_int(4, 4) + f_bytes(5, features) + f_int(6, 1))
    write("request", "predict_layer", b"\x03" + f_bytes(1, "m") + f_int(2, 1) + f_int(3, 1) + f_int(4, 4) + f_bytes(5, features[:16]) + f_int(7, 1))
    write("request", "predict_corrupt_model", b"\x03" + f_bytes(1, "bad") + f_int(3, 1) + f_int(4, 4) + f_bytes(5, features[:16]))
    write("request", "list_jobs", b"\x04" + f_int(1, 1) + f_int(2, 3) + f_int(5, 1))
    write("request", "get_job", b"\x05" + f_bytes(1, "0123456789abcdef"))
    write("request", "watch_job", b"\x06" + f_bytes(1, "0123456789abcdef") + f_int(2, 2))
    write("request", "get_dataset", b"\x07" + f_bytes(1, "up"))
    write("request", "describe_slice", b"\x08" + f_bytes(1, "synthetic:rows=10,cols=3,classes=2") + f_int(2, 5) + f_int(3, 2))
    write("request", "get_model", b"\x09" + f_bytes(1, "m") + f_int(2, 1))


def upload_seeds():
    # FuzzedDataProvider inputs have no format to follow; a few fixed random strings of various
    # lengths start the fuzzer off with uploads of several shapes.
    rng = random.Random(6)
    for i, size in enumerate([48, 96, 200, 400, 800]):
        write("upload", f"random_{size}", bytes(rng.randrange(256) for _ in range(size)))


def main():
    npy_seeds()
    idx_seeds()
    csv_seeds()
    model_seeds()
    safetensors_seeds()
    request_seeds()
    upload_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
