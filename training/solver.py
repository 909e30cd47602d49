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
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

# Caffe's deprecated ``solver_type`` enum (SolverParameter.SolverType) to the ``type`` string.
SOLVER_TYPE_ENUM = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}
SOLVER_TYPES = tuple(SOLVER_TYPE_ENUM.values())
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# Solvers whose history holds two blobs per learnable param.
TWO_HISTORY_SETS = ("Adam", "AdaDelta")


class SolverConfigError(ValueError):
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
            torch.zeros_like(p.tensor, dtype=torch.float32) for _ in range(sets) for p in self.params]

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
            diffs.append(torch.zeros_like(p.tensor, dtype=torch.float32) if g is None
                         else g.detach().to(torch.float32).clone())
        return diffs

    def clip_gradients(self, diffs: List[torch.Tensor]) -> None:
        """Scale all diffs so their global L2 norm is at most ``clip_gradients`` (if >= 0)."""
        clip = float(self.param.clip_gradients)
        if clip < 0 or not diffs:
            return
        sumsq = sum(float(torch.sum(d.double() * d.double())) for d in diffs)
        l2norm = math.sqrt(sumsq)
        if l2norm > clip:
            scale = clip / l2norm
            self.log("sgd_solver.cpp:92", "Gradient clipping: scaling down gradients (L2 norm "
                     f"{_g(l2norm)} > {_g(clip)}) by scale factor {_g(scale)}")
            for d in diffs:
                d.mul_(scale)

    @torch.no_grad()
    def apply_update(self, display: bool = False) -> float:
        """One Caffe ``ApplyUpdate``: returns the learning rate used. Does not advance ``iter``."""
        rate = self.learning_rate()
        if display:
            self.log("sgd_solver.cpp:105", f"Iteration {self.iter}, lr = {_g(rate)}")
        diffs = self._diffs()
        self.clip_gradients(diffs)
        p = self.param
        n = len(self.params)
        for i, (lp, diff) in enumerate(zip(self.params, diffs)):
            data = lp.tensor.data
            if p.iter_size != 1:
                diff.mul_(1.0 / p.iter_size)
            local_decay = float(np.float32(p.weight_decay) * np.float32(lp.decay_mult))
            if local_decay:
                if p.regularization_type == "L2":
                    diff.add_(data.float(), alpha=local_decay)
                else:
                    diff.add_(torch.sign(data.float()), alpha=local_decay)
            local_rate = float(np.float32(rate) * np.float32(lp.lr_mult))
            update = self._update_value(i, n, diff, local_rate)
            data.sub_(update.to(data.dtype))
        return rate

    def _update_value(self, i: int, n: int, diff: torch.Tensor, local_rate: float) -> torch.Tensor:
        p = self.param
        h = self.history[i]
        momentum = float(p.momentum)
        delta = float(p.delta)
        if self.type == "SGD":
            h.mul_(momentum).add_(diff, alpha=local_rate)
            return h.clone()
        if self.type == "Nesterov":
            previous = h.clone()
            h.mul_(momentum).add_(diff, alpha=local_rate)
            return h * (1.0 + momentum) - previous * momentum
        if self.type == "AdaGrad":
            h.add_(diff * diff)
            return diff / (torch.sqrt(h) + delta) * local_rate
        if self.type == "RMSProp":
            rms_decay = float(p.rms_decay)
            h.mul_(rms_decay).add_(diff * diff, alpha=1.0 - rms_decay)
            return diff / (torch.sqrt(h) + delta) * local_rate
        if self.type == "AdaDelta":
            h_update = self.history[n + i]
            h.mul_(momentum).add_(diff * diff, alpha=1.0 - momentum)
            step = diff * torch.sqrt((h_update + delta) / (h + delta))
            h_update.mul_(momentum).add_(step * step, alpha=1.0 - momentum)
            return step * local_rate
        if self.type == "Adam":
            beta1, beta2 = momentum, float(p.momentum2)
            m, v = h, self.history[n + i]
            t = self.iter + 1
            correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
            m.mul_(beta1).add_(diff, alpha=1.0 - beta1)
            v.mul_(beta2).add_(diff * diff, alpha=1.0 - beta2)
            return m / (torch.sqrt(v) + delta) * (local_rate * correction)
        raise SolverConfigError(f"unknown solver type {self.type!r}")  # unreachable: checked in __init__

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
