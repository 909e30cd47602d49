"""Caffe 1.0's solvers on torch tensors: update rules, learning-rate policies, history blobs.

One :class:`CaffeSolver` holds what Caffe's ``SGDSolver`` family holds (``iter``, ``current_step``
and the ``history`` blobs in Caffe's order), so a ``.solverstate`` written by Caffe restores here
and ours restores in Caffe. The arithmetic follows Caffe's ``ApplyUpdate`` step by step:

    rate = learning_rate()                 # lr_policy at the current iteration
    clip_gradients()                       # global L2 norm of the (accumulated) diffs
    for each learnable param:
        normalize     diff /= iter_size
        regularize    diff += weight_decay * decay_mult * (data | sign(data))
        update value  type-specific rule, local_rate = rate * lr_mult
    data -= diff

History layout (``SolverState.history``): one blob per learnable param, in the net's
learnable-param order; Adam and AdaDelta append a second set (Adam: second moments;
AdaDelta: squared updates), exactly as Caffe's ``AdamPreSolve`` / ``AdaDeltaPreSolve`` do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from openpose_train.common.errors import OpenPoseTrainError

# Caffe's deprecated ``solver_type`` enum (SolverParameter.SolverType) to the ``type`` string.
SOLVER_TYPE_ENUM = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}
SOLVER_TYPES = tuple(SOLVER_TYPE_ENUM.values())
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# Solvers whose history holds two blobs per learnable param.
TWO_HISTORY_SETS = ("Adam", "AdaDelta")


class SolverConfigError(OpenPoseTrainError, ValueError):
    """A solver prototxt whose values Caffe would reject (the message names the field)."""


@dataclass
class LearnableParam:
    """One learnable blob as the solver sees it (Caffe's ``learnable_params`` entry)."""

    tensor: torch.Tensor
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    layer_name: str = ""
    blob_index: int = 0


def solver_type_name(solver_param) -> str:
    """The solver type string, accepting both ``type: "Adam"`` and the old ``solver_type: ADAM``.

    Like Caffe's ``UpgradeSolverType``, giving both a non-default ``type`` and ``solver_type`` is an error.
    """
    has_enum = _has(solver_param, "solver_type")
    type_str = solver_param.type if _has(solver_param, "type") else ""
    if has_enum:
        enum_name = SOLVER_TYPE_ENUM.get(int(solver_param.solver_type))
        if enum_name is None:
            raise SolverConfigError(f"unknown solver_type enum value {solver_param.solver_type}")
        if type_str and type_str != enum_name:
            raise SolverConfigError(
                "the old solver_type field (enum) and the new type field (string) cannot both be "
                f"specified ({enum_name!r} vs {type_str!r})")
        return enum_name
    name = type_str or "SGD"
    # Caffe's registry is case sensitive; accept a few common spellings, report the rest.
    canonical = {t.lower(): t for t in SOLVER_TYPES}
    if name.lower() not in canonical:
        raise SolverConfigError(f"unknown solver type {name!r}; known types: {', '.join(SOLVER_TYPES)}")
    return canonical[name.lower()]


def _has(msg, field: str) -> bool:
    try:
        return msg.HasField(field)
    except ValueError:  # field not in this proto (or repeated): treat as unset
        return False


def learning_rate(solver_param, iteration: int, current_step: int = 0):
    """Caffe's ``SGDSolver::GetLearningRate``: (rate, new current_step).

    ``current_step`` is state for ``multistep`` (advanced by at most one per call, as in Caffe,
    and saved in the solverstate); ``step`` recomputes it.
    """
    p = solver_param
    policy = p.lr_policy
    base_lr = float(p.base_lr)
    gamma = float(p.gamma)
    if policy == "fixed":
        return base_lr, current_step
    if policy == "step":
        if p.stepsize <= 0:
            raise SolverConfigError("lr_policy 'step' needs stepsize > 0")
        current_step = iteration // p.stepsize
        return base_lr * gamma ** current_step, current_step
    if policy == "exp":
        return base_lr * gamma ** iteration, current_step
    if policy == "inv":
        return base_lr * (1.0 + gamma * iteration) ** (-float(p.power)), current_step
    if policy == "multistep":
        if current_step < len(p.stepvalue) and iteration >= p.stepvalue[current_step]:
            current_step += 1
        return base_lr * gamma ** current_step, current_step
    if policy == "poly":
        if p.max_iter <= 0:
            raise SolverConfigError("lr_policy 'poly' needs max_iter > 0")
        return base_lr * (1.0 - iteration / float(p.max_iter)) ** float(p.power), current_step
    if policy == "sigmoid":
        if p.stepsize <= 0:
            raise SolverConfigError("lr_policy 'sigmoid' needs stepsize > 0")
        return base_lr * (1.0 / (1.0 + math.exp(-gamma * (iteration - p.stepsize)))), current_step
    raise SolverConfigError(f"unknown lr_policy {policy!r}; known: {', '.join(LR_POLICIES)}")


def check_solver_param(solver_param) -> str:
    """Validate the values Caffe checks at solver construction; returns the solver type."""
    p = solver_param
    kind = solver_type_name(p)
    if p.lr_policy not in LR_POLICIES:
        raise SolverConfigError(f"unknown lr_policy {p.lr_policy!r}; known: {', '.join(LR_POLICIES)}")
    if p.lr_policy in ("step", "exp", "inv", "multistep", "sigmoid") and p.gamma < 0:
        raise SolverConfigError(f"gamma must be >= 0 for lr_policy {p.lr_policy!r}")
    if p.regularization_type not in ("L1", "L2"):
        raise SolverConfigError(f"unknown regularization_type {p.regularization_type!r} (L1 or L2)")
    if p.iter_size < 1:
        raise SolverConfigError("iter_size must be >= 1")
    # values Caffe accepts but that make no sense (a negative max_iter still snapshots): refuse them
    for name, minimum in (("max_iter", 0), ("display", 0), ("snapshot", 0), ("test_interval", 0),
                          ("average_loss", 1), ("base_lr", 0), ("momentum", 0), ("weight_decay", 0)):
        value = getattr(p, name)
        if value < minimum:
            raise SolverConfigError(f"{name} is {value:g}; it must be >= {minimum}")
    if any(n < 0 for n in p.test_iter):
        raise SolverConfigError(f"test_iter {list(p.test_iter)}: each must be >= 0")
    if p.lr_policy in ("step", "sigmoid") and p.stepsize <= 0:   # else only found at the first iteration
        raise SolverConfigError(f"lr_policy {p.lr_policy!r} needs stepsize > 0 (stepsize is {p.stepsize})")
    if p.lr_policy == "poly" and p.max_iter <= 0:
        raise SolverConfigError(f"lr_policy 'poly' needs max_iter > 0 (max_iter is {p.max_iter})")
    if kind in ("AdaGrad", "RMSProp") and p.momentum != 0:
        raise SolverConfigError(f"momentum cannot be used with {kind}")
    if kind == "RMSProp" and not 0 <= p.rms_decay < 1:
        raise SolverConfigError("rms_decay must be in [0, 1)")
    stepvalues = list(p.stepvalue)
    if p.lr_policy == "multistep" and any(b <= a for a, b in zip(stepvalues, stepvalues[1:])):
        raise SolverConfigError("stepvalue must be strictly increasing")
    return kind


class CaffeSolver:
    """Caffe's SGD-family solver over a list of :class:`LearnableParam`.

    ``apply_update()`` consumes each tensor's ``.grad`` (None counts as zero, as Caffe's cleared
    diff of a param that needs no backward) and updates ``.data`` in place.
    """

    def __init__(self, solver_param, params: Sequence[LearnableParam],
                 log: Optional[Callable[[str, str], None]] = None):
        self.param = solver_param
        self.type = check_solver_param(solver_param)
        self.params: List[LearnableParam] = list(params)
        self.iter = 0
        self.current_step = 0
        self.log = log or (lambda where, msg: None)
        sets = 2 if self.type in TWO_HISTORY_SETS else 1
        self.history: List[torch.Tensor] = [
            torch.zeros_like(p.tensor) for _ in range(sets) for p in self.params]

    # ---- learning rate -------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """The rate for the current iteration (advances ``current_step`` like Caffe)."""
        old_step = self.current_step
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.lr_policy == "multistep" and self.current_step != old_step:
            self.log("sgd_solver.cpp:46", f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}")
        return float(np.float32(rate))

    # ---- update --------------------------------------------------------------------------------
    def _diffs(self) -> List[torch.Tensor]:
        diffs = []
        for p in self.params:
            g = p.tensor.grad
            # like Caffe's diff, the gradient buffer itself is scaled and regularised in place
            # (the training loop clears .grad before the next iteration)
            diffs.append(torch.zeros_like(p.tensor) if g is None else g.detach().to(p.tensor.dtype))
        return diffs

    def clip_gradients(self, diffs: List[torch.Tensor]) -> None:
        """Scale all diffs so their global L2 norm is at most ``clip_gradients`` (if >= 0)."""
        clip = float(self.param.clip_gradients)
        if clip < 0 or not diffs:
            return
        sumsq = torch.stack([torch.sum(d.double() * d.double()) for d in diffs]).sum()
        l2norm = math.sqrt(float(sumsq))  # one device sync for all params
        if l2norm > clip:
            scale = clip / l2norm
            self.log("sgd_solver.cpp:92", "Gradient clipping: scaling down gradients (L2 norm "
                     f"{_g(l2norm)} > {_g(clip)}) by scale factor {_g(scale)}")
            for d in diffs:
                d.mul_(scale)

    @torch.no_grad()
    def apply_update(self, display: bool = False) -> float:
        """One Caffe ``ApplyUpdate``: returns the learning rate used. Does not advance ``iter``.

        The per-param steps run as fused ``torch._foreach_*`` ops over the params that share
        (lr_mult, decay_mult); the arithmetic is Caffe's, step by step.
        """
        rate = self.learning_rate()
        if display:
            self.log("sgd_solver.cpp:105", f"Iteration {self.iter}, lr = {_g(rate)}")
        diffs = self._diffs()
        self.clip_gradients(diffs)
        p = self.param
        if p.iter_size != 1:
            torch._foreach_mul_(diffs, 1.0 / p.iter_size)
        for (lr_mult, decay_mult), idx in self._groups().items():
            ds = [diffs[i] for i in idx]
            ws = [self.params[i].tensor for i in idx]
            local_decay = float(np.float32(p.weight_decay) * np.float32(decay_mult))
            if local_decay:
                if p.regularization_type == "L2":
                    torch._foreach_add_(ds, ws, alpha=local_decay)
                else:
                    torch._foreach_add_(ds, torch._foreach_sign(ws), alpha=local_decay)
            local_rate = float(np.float32(rate) * np.float32(lr_mult))
            self._update_group(idx, ds, ws, local_rate)
        return rate

    def _groups(self) -> Dict[tuple, List[int]]:
        groups: Dict[tuple, List[int]] = {}
        for i, lp in enumerate(self.params):
            groups.setdefault((lp.lr_mult, lp.decay_mult), []).append(i)
        return groups

    def _update_group(self, idx: List[int], ds: List[torch.Tensor], ws: List[torch.Tensor], local_rate: float) -> None:
        """ComputeUpdateValue (history and diff) then ``data -= diff`` for one group of params."""
        p = self.param
        n = len(self.params)
        hs = [self.history[i] for i in idx]
        momentum = float(p.momentum)
        delta = float(p.delta)
        if self.type == "SGD":      # h = momentum h + rate g ; w -= h
            torch._foreach_mul_(hs, momentum)
            torch._foreach_add_(hs, ds, alpha=local_rate)
            torch._foreach_sub_(ws, hs)
        elif self.type == "Nesterov":  # h' = momentum h + rate g ; w -= (1 + momentum) h' - momentum h
            previous = torch._foreach_mul(hs, momentum)
            torch._foreach_mul_(hs, momentum)
            torch._foreach_add_(hs, ds, alpha=local_rate)
            update = torch._foreach_mul(hs, 1.0 + momentum)
            torch._foreach_sub_(update, previous)
            torch._foreach_sub_(ws, update)
        elif self.type == "AdaGrad":  # h += g^2 ; w -= rate g / (sqrt(h) + delta)
            torch._foreach_addcmul_(hs, ds, ds)
            denom = torch._foreach_sqrt(hs)
            torch._foreach_add_(denom, delta)
            torch._foreach_addcdiv_(ws, ds, denom, value=-local_rate)
        elif self.type == "RMSProp":  # h = d h + (1 - d) g^2 ; w -= rate g / (sqrt(h) + delta)
            rms_decay = float(p.rms_decay)
            torch._foreach_mul_(hs, rms_decay)
            torch._foreach_addcmul_(hs, ds, ds, value=1.0 - rms_decay)
            denom = torch._foreach_sqrt(hs)
            torch._foreach_add_(denom, delta)
            torch._foreach_addcdiv_(ws, ds, denom, value=-local_rate)
        elif self.type == "AdaDelta":
            # h = m h + (1-m) g^2 ; s = g sqrt((u + delta) / (h + delta)) ; u = m u + (1-m) s^2 ; w -= rate s
            us = [self.history[n + i] for i in idx]
            torch._foreach_mul_(hs, momentum)
            torch._foreach_addcmul_(hs, ds, ds, value=1.0 - momentum)
            ratio = torch._foreach_add(us, delta)
            torch._foreach_div_(ratio, torch._foreach_add(hs, delta))
            torch._foreach_sqrt_(ratio)
            torch._foreach_mul_(ds, ratio)
            torch._foreach_mul_(us, momentum)
            torch._foreach_addcmul_(us, ds, ds, value=1.0 - momentum)
            torch._foreach_add_(ws, ds, alpha=-local_rate)
        elif self.type == "Adam":
            # m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ;
            # w -= rate sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + delta), t = iter + 1
            beta1, beta2 = momentum, float(p.momentum2)
            vs = [self.history[n + i] for i in idx]
            t = self.iter + 1
            correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
            torch._foreach_mul_(hs, beta1)
            torch._foreach_add_(hs, ds, alpha=1.0 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, ds, ds, value=1.0 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, delta)
            torch._foreach_addcdiv_(ws, hs, denom, value=-local_rate * correction)
        else:  # unreachable: checked in __init__
            raise SolverConfigError(f"unknown solver type {self.type!r}")

    # ---- state ---------------------------------------------------------------------------------
    def history_arrays(self) -> List[np.ndarray]:
        """History blobs as float32 arrays, in ``SolverState.history`` order."""
        return [h.detach().cpu().numpy().astype(np.float32, copy=True) for h in self.history]

    def load_history(self, arrays: Sequence[np.ndarray], source: str = "solverstate") -> None:
        """Restore history blobs (Caffe's ``RestoreSolverStateFromBinaryProto`` checks)."""
        if len(arrays) != len(self.history):
            raise SolverConfigError(
                f"{source}: incorrect length of history blobs: {len(arrays)} in the file, "
                f"{len(self.history)} expected for a {self.type} solver over {len(self.params)} learnable params")
        for i, (h, a) in enumerate(zip(self.history, arrays)):
            a = np.asarray(a, dtype=np.float32)
            if a.size != h.numel():
                lp = self.params[i % len(self.params)]
                raise SolverConfigError(
                    f"{source}: history blob {i} (layer {lp.layer_name!r} param {lp.blob_index}) has "
                    f"shape {list(a.shape)} ({a.size}), expected {list(h.shape)} ({h.numel()})")
            h.copy_(torch.from_numpy(a.reshape(tuple(h.shape))).to(h.device))

    def to(self, device) -> "CaffeSolver":
        """Move the history blobs to ``device`` (the params' device)."""
        self.history = [h.to(device) for h in self.history]
        return self


def _g(x: float) -> str:
    """C++ ostream's default float formatting (6 significant digits, like %g)."""
    return f"{x:.6g}"


format_float = _g
