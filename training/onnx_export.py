"""ONNX export of a deploy net (dynamic height/width), verified with onnxruntime against the engine."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from openpose_train.common.files import atomic_path
from openpose_train.common.errors import OpenPoseTrainError
from openpose_train.generator.output_paths import make_parent_folder


class OnnxExportError(OpenPoseTrainError):
    """Export or verification failed; the message names the file."""


class _DeployGraph(torch.nn.Module):
    """CaffeNet takes and returns blobs by name; ONNX wants one tensor in and one out."""

    def __init__(self, net, input_name: str, output_name: str):
        super().__init__()
        self.net, self.input_name, self.output_name = net, input_name, output_name

    def forward(self, image):
        return self.net({self.input_name: image})[self.output_name]


@contextlib.contextmanager
def _native_output_discarded():
    """The TorchScript exporter always logs (its ONNX log is switched on by its own setup) and, when
    it fails, writes the whole IR graph from C++ to the process's stdout: hundreds of lines before our
    one-line error. File descriptors 1 and 2 go to a scratch file meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def load_deploy_net(prototxt, caffemodel):
    """CaffeNet (TEST phase) of a deploy prototxt with the caffemodel's weights (missing layers refused)."""
    from openpose_train.caffe_layers import caffe_io
    from openpose_train.caffe_layers.net import CaffeNet

    net = CaffeNet(caffe_io.read_net_prototxt(str(prototxt)), phase="TEST")
    net.load_caffe_weights(caffe_io.read_caffemodel(str(caffemodel)), allow_missing=False)
    net.eval()
    return net


def export_onnx(prototxt, caffemodel, onnx_path, opset: int = 17, check_size=(1, 3, 96, 128),
                output_blob: str = "net_output", tolerance: float = 1e-4) -> dict:
    """Write ``onnx_path`` (atomically) and return {'max_abs_diff': ...} of onnxruntime vs the engine."""
    onnx_path = Path(onnx_path)
    make_parent_folder(onnx_path, OnnxExportError)
    net = load_deploy_net(prototxt, caffemodel)
    input_name = next(iter(net.input_blobs))
    if output_blob not in net.blob_shapes:
        raise OnnxExportError(f"{prototxt}: no blob named '{output_blob}'")
    graph = _DeployGraph(net, input_name, output_blob).eval()
    example = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, check_size).astype(np.float32))
    try:
        with atomic_path(onnx_path) as tmp, warnings.catch_warnings(), torch.no_grad(), \
                _native_output_discarded():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), str(tmp), input_names=[input_name],
                              output_names=[output_blob], opset_version=opset, dynamo=False,
                              dynamic_axes={input_name: {0: "batch", 2: "height", 3: "width"},
                                            output_blob: {0: "batch", 2: "out_height", 3: "out_width"}})
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]   # torch appends its IR graph
        raise OnnxExportError(f"ONNX export of {prototxt} failed: {first_line}") from None
    diff = verify_onnx(onnx_path, net, input_name, output_blob,
                       sizes=[check_size, (1, 3, 64, 64)])
    if diff > tolerance:
        raise OnnxExportError(f"{onnx_path}: onnxruntime differs from the engine by {diff:.3g} > {tolerance}")
    return {"max_abs_diff": diff, "input": input_name, "output": output_blob, "opset": opset}


def verify_onnx(onnx_path, net, input_name, output_blob, sizes) -> float:
    """Largest |onnxruntime - engine| over inputs of several sizes (proves the dynamic axes)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    worst = 0.0
    for size in sizes:
        x = rng.uniform(-0.5, 0.5, size).astype(np.float32)
        (onnx_out,) = session.run([output_blob], {input_name: x})
        with torch.no_grad():
            ref = net({input_name: torch.from_numpy(x)})[output_blob].numpy()
        if onnx_out.shape != ref.shape:
            raise OnnxExportError(f"{onnx_path}: output shape {onnx_out.shape} != engine {ref.shape} for input {size}")
        worst = max(worst, float(np.abs(onnx_out - ref).max()))
    return worst
