"""Batched categorical sampling on a counter-based Philox generator.

Where the random numbers come from
----------------------------------
Every draw is Philox-4x32-10 (``csrc/philox.h``) keyed by a 64-bit ``seed`` at the counter
``(row, offset // 4 + step)``, where ``offset`` counts 32-bit words as torch's CUDA Philox
offset does. ``seed`` and ``offset`` come from a torch generator (the default generator of
the logits' device when none is given), by :func:`seed_and_offset`:

- CUDA generators are Philox already: ``seed = generator.initial_seed()``, ``offset =
  generator.get_offset()``, and the offset is advanced with ``generator.set_offset`` past
  the words a call uses (flashinfer's ``get_seed_and_offset`` does the same through
  ``get_state``/``set_state``).
- CPU generators are a Mersenne Twister without an offset. pynas keeps the offset beside
  the generator (a weak-keyed table) together with the generator's state as the call left
  it; each call also draws one number from the generator so that its state moves. At the
  next call, an unchanged state continues the offset; the state of a fresh
  ``manual_seed(initial_seed())`` restarts at ``(initial_seed(), 0)``, exactly as a CUDA
  generator restarts; any other state (the generator was used by other random ops) starts
  a new stream keyed by a seed drawn from the generator.

So ``torch.manual_seed(s)`` reproduces draws, and after it the first calls on CPU and on
CUDA use the same (seed, offset) and draw the same actions. Under ``torch.compile`` the
generator cannot be read inside a graph: pass ``seed`` and ``offset`` explicitly (for
instance from :func:`seed_and_offset`, outside the compiled function).
"""
from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
from torch import Tensor

from pynas.ops import _kernels

_MASK32 = 0xFFFFFFFF
_MASK64 = 2**64 - 1
_SEED_DRAW_BOUND = 2**62  # seeds drawn from a used CPU generator
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Sample(NamedTuple):
    """Draws of :func:`sample_categorical`: actions (B,) int64, log_prob and entropy (B,)."""

    actions: Tensor
    log_prob: Tensor
    entropy: Tensor


class _CpuStream(NamedTuple):
    state: Tensor  # the generator's state as the last call left it
    seed: int
    next_offset: int


_cpu_streams: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_seeded_states: dict[int, Tensor] = {}


def _seeded_state(seed: int) -> Tensor:
    """The state of a CPU generator right after ``manual_seed(seed)`` (a few cached)."""
    if seed not in _seeded_states:
        if len(_seeded_states) >= 16:
            _seeded_states.clear()
        _seeded_states[seed] = torch.Generator().manual_seed(seed).get_state()
    return _seeded_states[seed]


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    if device.type == "cpu":
        return torch.default_generator
    raise ValueError(f"no Philox seed for device {device}; sampling runs on cpu or cuda")


def seed_and_offset(
    increment: int, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[int, int]:
    """Take ``(seed, offset)`` for a Philox call that uses ``increment`` 32-bit words per
    row, and advance ``generator`` past them (see the module docstring).

    Parameters
    ----------
    increment : words each row uses, a multiple of 4 (one Philox block is 4 words).
    generator : a CPU or CUDA ``torch.Generator``; None for the default one of ``device``.
    device : where the draws run, when ``generator`` is None.

    Returns
    -------
    tuple of int
        ``seed`` in [0, 2**64) and ``offset`` (a multiple of 4).
    """
    if increment < 0 or increment % 4:
        raise ValueError(f"increment must be a non-negative multiple of 4, got {increment}")
    if generator is None:
        generator = _default_generator(torch.device(device))
    if generator.device.type == "cuda":
        offset = generator.get_offset()
        generator.set_offset(offset + increment)
        return generator.initial_seed() & _MASK64, offset
    state = generator.get_state()
    stream = _cpu_streams.get(generator)
    if stream is not None and torch.equal(state, stream.state):
        seed, offset = stream.seed, stream.next_offset
    elif torch.equal(state, _seeded_state(generator.initial_seed())):
        seed, offset = generator.initial_seed() & _MASK64, 0
        # Move the state off the freshly seeded one, so that a later manual_seed shows.
        torch.randint(2, (), generator=generator)
    else:
        seed, offset = int(torch.randint(_SEED_DRAW_BOUND, (), generator=generator)), 0
    _cpu_streams[generator] = _CpuStream(generator.get_state(), seed, offset + increment)
    return seed, offset


# ---- the pure-PyTorch reference: test oracle and fallback ----

def _multiply_high_low(multiplier: int, value: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``multiplier * value`` for uint32s held in int64
    (the 64-bit product would overflow int64, so multiply 16-bit halves)."""
    low_part = multiplier * (value & 0xFFFF)
    high_part = multiplier * (value >> 16)
    middle = low_part + ((high_part & 0xFFFF) << 16)
    return (high_part >> 16) + (middle >> 32), middle & _MASK32


def philox_uniform_reference(seed: int, rows: Tensor, steps: Tensor) -> Tensor:
    """Uniforms in (0, 1), float64, of draws ``(rows, steps)`` under ``seed``: the
    arithmetic of ``csrc/philox.h`` in int64 torch ops. ``rows`` and ``steps`` broadcast."""
    rows, steps = torch.broadcast_tensors(rows.to(torch.int64), steps.to(torch.int64))
    counter = [rows & _MASK32, (rows >> 32) & _MASK32, steps & _MASK32, (steps >> 32) & _MASK32]
    key0, key1 = seed & _MASK32, (seed >> 32) & _MASK32
    for round_index in range(10):
        if round_index > 0:
            key0 = (key0 + 0x9E3779B9) & _MASK32
            key1 = (key1 + 0xBB67AE85) & _MASK32
        high0, low0 = _multiply_high_low(0xD2511F53, counter[0])
        high1, low1 = _multiply_high_low(0xCD9E8D57, counter[2])
        counter = [high1 ^ counter[1] ^ key0, low1, high0 ^ counter[3] ^ key1, low0]
    bits = ((counter[0] >> 5) << 26) | (counter[1] >> 6)
    return (bits.to(torch.float64) + 0.5) / 2.0**53


def categorical_from_uniform_reference(logits: Tensor, uniform: Tensor) -> Sample:
    """Inverse-CDF draws from softmax(logits) (B, K) with uniforms (B,), in float64, as
    ``csrc/sampling.h`` draws them; rows without a distribution give -1 and NaN."""
    wide = logits.to(torch.float64)
    maximum = wide.amax(dim=1, keepdim=True)
    defined = ~(wide.isnan() | (wide == float("inf"))).any(dim=1) & (maximum[:, 0] > -float("inf"))
    shifted = torch.where(defined[:, None], wide - maximum, torch.zeros_like(wide))
    weights = shifted.exp()
    cumulative = weights.cumsum(dim=1)
    total = cumulative[:, -1:]
    below = (cumulative <= uniform.to(wide.device)[:, None] * total).sum(dim=1)
    # Rounding can carry the target past the total: take the last positive weight then.
    last_positive = (weights > 0).cumsum(dim=1).argmax(dim=1)
    actions = torch.minimum(below, last_positive)
    log_probs = torch.log_softmax(shifted, dim=1)
    log_prob = log_probs.gather(1, actions[:, None])[:, 0]
    entropy = -(weights / total * shifted).nan_to_num(nan=0.0).sum(dim=1) + total[:, 0].log()
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=wide.device)
    actions = torch.where(defined, actions, torch.full_like(actions, -1))
    return Sample(actions, torch.where(defined, log_prob, nan).to(logits.dtype),
                  torch.where(defined, entropy, nan).to(logits.dtype))


def sample_categorical_reference(logits: Tensor, seed: int, offset: int) -> Sample:
    """:func:`sample_categorical` in plain torch ops, for explicit ``seed`` and ``offset``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    uniform = philox_uniform_reference(seed & _MASK64, rows, torch.tensor(offset // 4))
    return categorical_from_uniform_reference(logits, uniform)


# ---- the public op ----

def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a Tensor, got {type(logits).__name__}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, N), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 1:
        raise ValueError("logits must have N >= 1 classes, got N = 0")


def sample_categorical(
    logits: Tensor, generator: torch.Generator | None = None, *,
    seed: int | None = None, offset: int | None = None,
) -> Sample:
    """Draw one action per row from ``softmax(logits)``, with its log-probability and the
    row's entropy, on the Philox generator (see the module docstring for seeds).

    Parameters
    ----------
    logits : (B, N) float16, bfloat16, float32 or float64 on cpu or cuda. ``-inf`` marks an
        impossible action: it is never drawn.
    generator : the torch generator to take seed and offset from (and advance); None for
        the default generator of ``logits.device``.
    seed, offset : given together instead of a generator (needed under ``torch.compile``,
        which cannot read a generator inside a graph); ``offset`` is a multiple of 4.

    Returns
    -------
    Sample
        ``actions`` (B,) int64; ``log_prob`` (B,) ``log softmax(logits)[b, actions[b]]``;
        ``entropy`` (B,) of each row's distribution; both in ``logits.dtype`` (computed in
        float64). A row with a NaN or +inf logit, or only ``-inf`` logits, has no
        distribution: action -1 and NaN log_prob and entropy. Not differentiable: a
        learner re-scores its actions with ``torch.log_softmax`` to get gradients (the RL
        controller does).

    Raises
    ------
    TypeError
        ``logits`` not a floating-point tensor, ``generator`` not a ``torch.Generator``.
    ValueError
        ``logits`` not of shape (B, N >= 1); a generator on another device than
        ``logits``; ``seed`` without ``offset`` or the reverse; a bad ``offset``.
    """
    _check_logits(logits)
    if (seed is None) != (offset is None):
        raise ValueError("seed and offset must be given together")
    if seed is None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator is not None and generator.device.type != logits.device.type:
            raise ValueError(f"generator is on {generator.device} but logits are on "
                             f"{logits.device}")
        seed, offset = seed_and_offset(4, generator, logits.device)
    elif generator is not None:
        raise ValueError("give either generator or seed and offset, not both")
    elif offset < 0 or offset % 4:
        raise ValueError(f"offset must be a non-negative multiple of 4, got {offset}")
    # The op takes the seed as a signed int64 (the schema's int).
    signed_seed = seed - 2**64 if seed >= 2**63 else seed
    if torch.compiler.is_compiling():
        return Sample(*torch.ops.pynas.sample_categorical(logits, signed_seed, offset))
    return Sample(*_kernels.sample_categorical(logits, signed_seed, offset))
