"""``openpose-train time -model P -iterations N [-gpu 0]``: per-layer timing like ``caffe time``.

Each layer runs on its own, as Caffe's layer-by-layer Forward/Backward do: its bottoms are detached leaves,
so its forward and its backward (``autograd.backward`` of its tops with the gradients its consumers sent
back) are timed separately; the gradients are then handed to the producers. The data layers' tops are
random tensors of the shapes the prototxt implies (OPData: crop size and batch; the label's channels from
the model registry), so the figures cover the net only, not data loading. The output reproduces Caffe's
log lines ("Average time per layer:", "<name>\\tforward: x ms.", "Average Forward pass: x ms.", ...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import click
import torch

from openpose_train.caffe_layers.net import CaffeNet
from openpose_train.common.errors import reports_errors


@dataclass
class LayerTimes:
    """Accumulated milliseconds per layer (in net order) and per iteration."""

    names: List[str]
    forward_ms: List[float]
    backward_ms: List[float]
    iteration_ms: List[float] = field(default_factory=list)
    initial_loss: float = 0.0

    @property
    def iterations(self) -> int:
        return len(self.iteration_ms)


def random_inputs(net: CaffeNet, device="cpu", seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors for the net's input blobs (shapes must be fully known)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in net.input_blobs.items():
        if any(s is None for s in shape) or not shape:
            dims = "x".join("?" if s is None else str(s) for s in shape)
            raise click.ClickException(f"input blob '{name}' has no complete shape ({dims}); "
                                       f"the prototxt does not say its size")
        out[name] = (torch.rand(tuple(shape), generator=g) - 0.5).to(device)
    return out


def _sync_for(device) -> Callable[[], None]:
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_layers(net: CaffeNet, inputs: Dict[str, torch.Tensor], iterations: int,
                device="cpu", backward: bool = True) -> LayerTimes:
    """Run ``iterations`` layer-by-layer forward(+backward) passes and accumulate per-layer times."""
    steps = net._steps
    result = LayerTimes([s.name for s in steps], [0.0] * len(steps), [0.0] * len(steps))
    sync = _sync_for(device)
    for it in range(iterations):
        sync()
        start = time.perf_counter()
        loss = _one_pass(net, steps, inputs, result, sync, backward)
        sync()
        result.iteration_ms.append((time.perf_counter() - start) * 1e3)
        if it == 0:
            result.initial_loss = loss
    return result


def _one_pass(net, steps, inputs, result, sync, backward) -> float:
    blobs = {name: (t, None, 0) for name, t in inputs.items()}
    records = []
    loss = 0.0
    for i, step in enumerate(steps):
        leaves, args = [], []
        for b, detach in zip(step.bottoms, step.detach):
            tensor, producer, k = blobs[b]
            if producer is not None and tensor.requires_grad and not detach and backward:
                leaf = tensor.detach().requires_grad_(True)
                leaves.append((leaf, producer, k))
                args.append(leaf)
            else:
                args.append(tensor.detach())
        sync()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            tops = step.module(*args)
        sync()
        result.forward_ms[i] += (time.perf_counter() - t0) * 1e3
        for k, (name, value) in enumerate(zip(step.tops, tops)):
            blobs[name] = (value, i, k)
            if step.loss_weights[k]:
                loss += float(value.detach().float().sum()) * step.loss_weights[k]
        records.append((leaves, tops))
    if not backward:
        return loss
    grads: Dict = {}
    for i in reversed(range(len(steps))):
        leaves, tops = records[i]
        outs, out_grads = [], []
        for k, top in enumerate(tops):
            g = grads.pop((i, k), None)
            weight = steps[i].loss_weights[k]
            if weight:
                g = weight * torch.ones_like(top) if g is None else g + weight
            if g is not None and top.requires_grad:
                outs.append(top)
                out_grads.append(g)
        if not outs:
            continue
        sync()
        t0 = time.perf_counter()
        torch.autograd.backward(outs, out_grads)
        sync()
        result.backward_ms[i] += (time.perf_counter() - t0) * 1e3
        for leaf, producer, k in leaves:
            if leaf.grad is not None:
                key = (producer, k)
                grads[key] = leaf.grad if key not in grads else grads[key] + leaf.grad
    return loss


def format_caffe_time_lines(times: LayerTimes) -> List[tuple]:
    """(caffe.cpp location, message) pairs of ``caffe time``'s benchmark report."""
    n = max(1, times.iterations)
    lines = [("caffe.cpp:388", "Average time per layer: ")]
    for name, f, b in zip(times.names, times.forward_ms, times.backward_ms):
        lines.append(("caffe.cpp:391", f"{name:>10}\tforward: {f / n:g} ms."))
        lines.append(("caffe.cpp:394", f"{name:>10}\tbackward: {b / n:g} ms."))
    total = sum(times.iteration_ms)
    lines += [
        ("caffe.cpp:399", f"Average Forward pass: {sum(times.forward_ms) / n:g} ms."),
        ("caffe.cpp:401", f"Average Backward pass: {sum(times.backward_ms) / n:g} ms."),
        ("caffe.cpp:403", f"Average Forward-Backward: {total / n:g} ms."),
        ("caffe.cpp:404", f"Total Time: {total:g} ms."),
        ("caffe.cpp:405", "*** Benchmark ends ***"),
    ]
    return lines


@click.command("time")
@click.option("-model", "--model", "model", required=True, type=click.Path(dir_okay=False),
              help="The net prototxt to time (training or deploy).")
@click.option("-iterations", "--iterations", "iterations", default=50, show_default=True, type=int,
              help="Number of forward-backward iterations.")
@click.option("-gpu", "--gpu", "gpu", default=None,
              help="GPU id to run on (the first of a list); CPU when absent.")
@click.option("-phase", "--phase", "phase", default="TRAIN", show_default=True,
              type=click.Choice(["TRAIN", "TEST"]), help="Net phase (include/exclude rules).")
@click.option("-level", "--level", "level", default=0, type=int, help="Net state level.")
@click.option("-stage", "--stage", "stage", default="", help="Comma-separated net stages.")
@click.option("-forward_only", "--forward-only", "forward_only", is_flag=True,
              help="Time the forward pass only.")
@reports_errors
def time_cmd(model, iterations, gpu, phase, level, stage, forward_only):
    """Per-layer forward/backward times of a net, printed like `caffe time`."""
    from openpose_train.caffe_layers.caffe_io import CaffeFormatError, read_net_prototxt
    from openpose_train.caffe_layers.layers import LayerConfigError, UnsupportedLayerError
    from openpose_train.caffe_layers.net import NetDefinitionError
    from openpose_train.training.logging_utils import GlogLogger

    if iterations < 1:
        raise click.ClickException("-iterations must be at least 1")
    log = GlogLogger()
    device = "cpu"
    if gpu not in (None, "", "-1"):
        if not torch.cuda.is_available():
            raise click.ClickException(f"-gpu {gpu}: no CUDA device is available")
        first = str(gpu).split(",")[0]
        device = "cuda:0" if first == "all" else f"cuda:{int(first)}"
        log.info("caffe.cpp:327", f"Use GPU with device ID {device.split(':')[1]}")
    else:
        log.info("caffe.cpp:333", "Use CPU.")
    try:
        net_param = read_net_prototxt(model)
        stages = tuple(s for s in stage.split(",") if s)
        net = CaffeNet(net_param, phase=phase, stages=stages, level=level, seed=0).to(device)
    except (CaffeFormatError, UnsupportedLayerError, LayerConfigError, NetDefinitionError) as exc:
        raise click.ClickException(f"{model}: {exc}") from None   # the message names the layer, this the file
    inputs = random_inputs(net, device)
    log.info("caffe.cpp:344", "Performing Forward")
    warm = time_layers(net, inputs, 1, device, backward=not forward_only)
    log.info("caffe.cpp:346", f"Initial loss: {warm.initial_loss:g}")
    if not forward_only:
        log.info("caffe.cpp:347", "Performing Backward")
    log.info("caffe.cpp:357", "*** Benchmark begins ***")
    log.info("caffe.cpp:358", f"Testing for {iterations} iterations.")
    times = time_layers(net, inputs, iterations, device, backward=not forward_only)
    for j, ms in enumerate(times.iteration_ms):
        log.info("caffe.cpp:386", f"Iteration: {j + 1} forward-backward time: {ms:g} ms.")
    for where, message in format_caffe_time_lines(times):
        log.info(where, message)
