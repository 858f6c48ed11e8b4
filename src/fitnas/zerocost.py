"""Zero-cost proxies: scores of an untrained network that rank architectures without training them.

Each proxy takes a torch `nn.Module` (as a space's builder makes it, e.g.
`fitnas.spaces.nb201.build`) and, where the proxy reads data, one batch of
inputs (and labels); library code takes tensors, never paths. Higher scores
are meant to mean better architectures. Every function works on a deep copy,
so the caller's network (its weights, BatchNorm statistics, gradients and
train/eval mode) is left exactly as it was.

Implemented from the papers (not from any library's code):

- `synflow`: Tanaka et al., NeurIPS 2020, used as a NAS proxy by Abdelfattah
  et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021. Data-free.
- `grad_norm` and `snip`: Abdelfattah et al., ICLR 2021 (snip after Lee et
  al., ICLR 2019).
- `naswot`: Mellor et al., "Neural Architecture Search without Training",
  ICML 2021 (the ReLU-code kernel); `jacov`: the Jacobian-covariance score of
  the same authors' first version (arXiv 2006.04647v1).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fitnas.data import splits
from fitnas.data.batches import Batches

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# jacov's regulariser: keeps log and 1/x finite on the correlation matrix's zero eigenvalues.
JACOV_K = 1e-5


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight tensors of convolutions and linear layers: where grad-norm and snip look."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)) and m.weight is not None]


@torch.no_grad()
def _reset_batchnorm_to_identity(model: nn.Module) -> None:
    """Running mean 0 and variance 1 with eval mode: each BatchNorm becomes x / sqrt(1 + eps) times |gamma|.

    synflow must not depend on data, and batch statistics of an all-ones input
    would be zero variance (every activation equal), which divides by ~eps.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)


def synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Synaptic flow, data-free: sum over all parameters of |theta * dR/dtheta|.

    The network is linearised: every parameter replaced by its absolute value,
    BatchNorm reduced to a scaling (see `_reset_batchnorm_to_identity`), and an
    all-ones input of `input_shape` (without the batch dimension) sent
    through in float64 (the product of many positive layers overflows float32).
    R is the sum of the outputs. With positive weights and inputs every ReLU
    passes everything, so R counts the weighted input-to-output paths, and for
    a bias-free stack of L linear layers the score is exactly L * R.
    """
    net = copy.deepcopy(model).double().eval()
    _reset_batchnorm_to_identity(net)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    params = [p for p in net.parameters() if p.requires_grad]
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    net(ones).sum().backward()
    return float(sum(float((p.detach() * p.grad).abs().sum()) for p in params if p.grad is not None))


def grad_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn | None = None) -> float:
    """Sum over conv and linear weight tensors of the L2 norm of the loss gradient on one batch.

    Abdelfattah et al.'s grad-norm. The network runs in train mode (batch
    statistics in BatchNorm), as at the start of training; `loss_fn` defaults
    to cross-entropy.
    """
    net = copy.deepcopy(model).train()
    loss_fn = loss_fn or nn.functional.cross_entropy
    net.zero_grad(set_to_none=True)
    loss_fn(net(inputs), targets).backward()
    return float(sum(float(w.grad.norm(2)) for w in _weights(net) if w.grad is not None))


def snip(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn | None = None) -> float:
    """Sum over conv and linear weights of |w * dL/dw| on one batch (connection sensitivity)."""
    net = copy.deepcopy(model).train()
    loss_fn = loss_fn or nn.functional.cross_entropy
    net.zero_grad(set_to_none=True)
    loss_fn(net(inputs), targets).backward()
    return float(sum(float((w.detach() * w.grad).abs().sum()) for w in _weights(net) if w.grad is not None))


def relu_codes(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Binary activation codes: one row per input, one column per unit of every nn.ReLU or nn.ReLU6 (1 where it is > 0).

    The network runs once in train mode on the batch, without gradients.
    """
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        codes.append((output.detach().flatten(1) > 0).to(torch.float64))

    # ReLU6 (the chain space's MobileNet blocks) has the same on/off code as ReLU.
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not codes:
        raise ValueError("naswot needs a network with nn.ReLU or nn.ReLU6 modules; this one has none")
    return torch.cat(codes, dim=1)


def naswot(model: nn.Module, inputs: torch.Tensor) -> float:
    """Mellor et al.'s score: log |det K_H| with K_H[i, j] = units - Hamming(code_i, code_j).

    Codes are the ReLU activation patterns of the batch's inputs
    (`relu_codes`). A network that maps different inputs to different
    patterns has a well-conditioned kernel and a high score; -inf when two
    inputs share one pattern (a singular kernel).
    """
    c = relu_codes(model, inputs)
    # Agreements = units - Hamming distance = (both on) + (both off).
    kernel = c @ c.T + (1.0 - c) @ (1.0 - c).T
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0.0 else -math.inf


def jacov(model: nn.Module, inputs: torch.Tensor) -> float:
    """Jacobian covariance: -sum_i [log(lambda_i + k) + 1 / (lambda_i + k)] over the eigenvalues of the
    correlation matrix of the per-input Jacobians d(sum of outputs)/d(input), k = 1e-5.

    Jacobians that are uncorrelated across inputs (the network treats inputs
    differently) give eigenvalues near 1 and a high score; identical ones give
    one eigenvalue N and N-1 zeros, and a very low score. Train-mode BatchNorm
    mixes the batch, so each input's Jacobian includes a small cross term,
    as it does at the start of training.
    """
    net = copy.deepcopy(model).train()
    x = inputs.detach().clone().requires_grad_(True)
    net(x).sum().backward()
    jac = x.grad.flatten(1).to(torch.float64).numpy()
    corr = np.corrcoef(jac)
    corr = np.nan_to_num(corr, nan=0.0)  # a constant Jacobian row has no correlation to speak of
    eig = np.linalg.eigvalsh(corr)
    return float(-np.sum(np.log(eig + JACOV_K) + 1.0 / (eig + JACOV_K)))


PROXIES = ("synflow", "naswot", "jacov", "grad_norm", "snip")


def score_all(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    proxies: tuple[str, ...] = PROXIES,
    seed: int = 0,
) -> dict[str, float]:
    """Several proxies of one network on one batch, each from the same seeded random state.

    synflow reads only the batch's shape (one input's). Seeding matters
    because the network's own dropout or random ops, if any, would otherwise
    differ between proxies.
    """
    unknown = set(proxies) - set(PROXIES)
    if unknown:
        raise ValueError(f"unknown zero-cost proxy {sorted(unknown)}; valid: {', '.join(PROXIES)}")
    out: dict[str, float] = {}
    for name in proxies:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if name == "synflow":
                out[name] = synflow(model, tuple(inputs.shape[1:]))
            elif name == "naswot":
                out[name] = naswot(model, inputs)
            elif name == "jacov":
                out[name] = jacov(model, inputs)
            elif name == "grad_norm":
                out[name] = grad_norm(model, inputs, targets)
            else:
                out[name] = snip(model, inputs, targets)
    return out


def score_archs(
    archs: Sequence[tuple[int, ...]],
    build: Callable[[tuple[int, ...]], nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    proxies: tuple[str, ...] = PROXIES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each proxy for many architectures: `build(arch)` makes each network, initialised from `seed`.

    Every network starts from the same seeded random state, so two builds of
    one arch get one initialisation and one score; pass canonical archs to
    score each distinct network once. Returns one array per proxy, in arch order.
    """
    out: dict[str, list[float]] = {name: [] for name in proxies}
    for arch in archs:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build(tuple(arch))
        for name, value in score_all(model, inputs, targets, proxies, seed).items():
            out[name].append(value)
    return {name: np.asarray(values, dtype=float) for name, values in out.items()}


def proxy_batch(split: splits.Split, size: int, seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The one batch of training images (normalised as training sees them) every network's proxies read.

    A seeded, class-balanced subset, so the sample stage and the rank check score their networks
    on the same images and their proxy values are comparable.
    """
    chosen = splits.subset(split, size, seed)
    inputs, targets = next(iter(Batches(chosen, len(chosen), shuffle=False, seed=seed, device=device)))
    return inputs, targets
