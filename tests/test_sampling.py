"""pynas.ops.sample_categorical: Philox against known answers, the kernel against its
PyTorch reference, frequencies (chi-square over a million draws), -inf, log_prob and
entropy against torch.distributions, seeds, bad input, opcheck, torch.compile, CPU = CUDA."""
from __future__ import annotations

import math

import pytest
import torch

from pynas import _backend
from pynas.ops import sample_categorical
from pynas.ops.sampling import (
    philox_uniform_reference,
    sample_categorical_reference,
    seed_and_offset,
)

# Without pynas._C the tests that need no kernel run the PyTorch fallback, which warns once.
pytestmark = pytest.mark.filterwarnings("ignore:pynas.*using the PyTorch:RuntimeWarning")
needs_kernel = pytest.mark.skipif("cpu" not in _backend.backends(),
                                  reason="pynas._C is not built")


def chi_square_bound(degrees: int, z: float = 3.719) -> float:
    """The chi-square quantile at 1 - 1e-4 (z = 3.719), Wilson-Hilferty approximation."""
    ratio = 2.0 / (9.0 * degrees)
    return degrees * (1.0 - ratio + z * math.sqrt(ratio)) ** 3


def test_philox_reference_matches_random123_known_answers():
    # Random123's kat_vectors for philox4x32_10: counter 0, key 0 gives words 6627e8d5
    # e169c58d ..., and counter (0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344) under
    # key (0xa4093822, 0x299f31d0) gives d16cfe09 94fdcceb ...
    def expected(word0: int, word1: int) -> float:
        return (((word0 >> 5) << 26 | (word1 >> 6)) + 0.5) / 2.0**53

    zero = philox_uniform_reference(0, torch.tensor([0]), torch.tensor([0]))
    assert zero.item() == expected(0x6627E8D5, 0xE169C58D)
    row = 0x85A308D3_243F6A88 - 2**64  # as the signed int64 a tensor holds
    pi = philox_uniform_reference(0x299F31D0_A4093822, torch.tensor([row]),
                                  torch.tensor([0x03707344_13198A2E]))
    assert pi.item() == expected(0xD16CFE09, 0x94FDCCEB)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 2), (33, 5), (1000, 17), (64, 300)])
def test_kernel_matches_reference(shape, dtype):
    generator = torch.Generator().manual_seed(sum(shape))
    logits = 3 * torch.randn(shape, dtype=dtype, generator=generator)
    logits[torch.rand(shape, generator=generator) < 0.2] = -float("inf")
    logits[:, 0] = logits[:, 0].clamp(min=-5.0)  # at least one finite logit per row
    for seed, offset in [(0, 0), (12345, 8), (2**64 - 1, 2**40)]:
        got = sample_categorical(logits, seed=seed, offset=offset)
        want = sample_categorical_reference(logits, seed, offset)
        assert torch.equal(got.actions, want.actions)
        torch.testing.assert_close(got.log_prob, want.log_prob)
        torch.testing.assert_close(got.entropy, want.entropy)
        assert got.log_prob.dtype == dtype and got.actions.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_log_prob_and_entropy_equal_torch_distributions(dtype):
    generator = torch.Generator().manual_seed(7)
    logits = (2 * torch.randn(500, 9, generator=generator)).to(dtype)
    logits[::3, 4] = -float("inf")
    sample = sample_categorical(logits, torch.Generator().manual_seed(1))
    distribution = torch.distributions.Categorical(logits=logits.double())
    tolerance = {} if dtype in (torch.float32, torch.float64) else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(sample.log_prob, distribution.log_prob(sample.actions).to(dtype),
                               **tolerance)
    torch.testing.assert_close(sample.entropy, distribution.entropy().to(dtype), **tolerance)


@needs_kernel
@pytest.mark.parametrize("num_classes", [7, 100])
def test_frequencies_match_softmax_over_a_million_draws(num_classes):
    draws = 1_000_000
    generator = torch.Generator().manual_seed(num_classes)
    row = 2 * torch.randn(num_classes, dtype=torch.float64, generator=generator)
    row[1] = -float("inf")
    logits = row.expand(draws, num_classes)  # one row for all: the kernel reads it in place
    actions = sample_categorical(logits, torch.Generator().manual_seed(3)).actions
    counts = torch.bincount(actions, minlength=num_classes).double()
    assert counts[1] == 0
    possible = torch.isfinite(row)
    expected = torch.softmax(row, dim=0)[possible] * draws
    statistic = ((counts[possible] - expected) ** 2 / expected).sum().item()
    assert statistic < chi_square_bound(int(possible.sum()) - 1), statistic


def test_minus_infinity_is_never_drawn():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 12, generator=generator)
    impossible = torch.rand(20_000, 12, generator=generator) < 0.7
    impossible[:, 5] = False
    logits[impossible] = -float("inf")
    impossible[:10, :] = True
    impossible[:10, 3] = False
    logits[:10, :] = -float("inf")
    logits[:10, 3] = 1e30  # a single possible action, with a huge logit
    sample = sample_categorical(logits, torch.Generator().manual_seed(0))
    assert not impossible.gather(1, sample.actions[:, None]).any()
    assert torch.equal(sample.actions[:10], torch.full((10,), 3))
    assert torch.equal(sample.log_prob[:10], torch.zeros(10))


def test_rows_without_distribution_give_minus_one_and_nan():
    logits = torch.tensor([[0.0, float("nan")], [-float("inf")] * 2, [float("inf"), 0.0],
                           [0.0, 0.0]])
    sample = sample_categorical(logits, seed=1, offset=0)
    assert sample.actions[:3].tolist() == [-1, -1, -1] and sample.actions[3] in (0, 1)
    assert sample.log_prob[:3].isnan().all() and sample.entropy[:3].isnan().all()
    assert sample.log_prob[3].item() == pytest.approx(-math.log(2))


def test_manual_seed_reproduces_and_consecutive_calls_differ():
    logits = torch.zeros(256, 10)
    torch.manual_seed(5)
    first, second = sample_categorical(logits), sample_categorical(logits)
    torch.manual_seed(5)
    assert torch.equal(sample_categorical(logits).actions, first.actions)
    assert torch.equal(sample_categorical(logits).actions, second.actions)
    assert not torch.equal(first.actions, second.actions)
    # After manual_seed the stream is (seed, offset 0, 4, ...), the contract CUDA shares.
    torch.manual_seed(5)
    assert seed_and_offset(4) == (5, 0)
    assert seed_and_offset(8) == (5, 4)
    assert seed_and_offset(4) == (5, 12)


def test_generator_argument_and_other_random_ops():
    logits = torch.zeros(256, 10)
    generator = torch.Generator().manual_seed(9)
    first = sample_categorical(logits, generator)
    generator.manual_seed(9)
    assert torch.equal(sample_categorical(logits, generator).actions, first.actions)
    generator.manual_seed(9)
    torch.rand(3, generator=generator)  # another op used the generator: a new stream
    assert not torch.equal(sample_categorical(logits, generator).actions, first.actions)
    # The default generator was not touched by any of this.
    torch.manual_seed(9)
    assert torch.equal(sample_categorical(logits).actions, first.actions)


@needs_kernel
def test_thread_count_does_not_change_draws():
    logits = torch.randn(5000, 6, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sample_categorical(logits, seed=4, offset=0)
        torch.set_num_threads(2)
        two = sample_categorical(logits, seed=4, offset=0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.actions, two.actions)


@needs_kernel
def test_strided_and_expanded_logits():
    base = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    for logits in (base.t(), base[:, ::3], base[:, 5:9], base[2:3].expand(50, 40)):
        got = sample_categorical(logits, seed=8, offset=4)
        want = sample_categorical_reference(logits.contiguous(), 8, 4)
        assert torch.equal(got.actions, want.actions)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (([[0.0, 1.0]],), TypeError, "logits must be a Tensor"),
        ((torch.zeros(2, 3, dtype=torch.int64),), TypeError, "float16, bfloat16"),
        ((torch.zeros(3),), ValueError, r"shape \(B, N\)"),
        ((torch.zeros(2, 3, 4),), ValueError, r"shape \(B, N\)"),
        ((torch.zeros(2, 0),), ValueError, "N >= 1"),
        ((torch.zeros(2, 3), 7), TypeError, "torch.Generator"),
    ],
)
def test_bad_input_raises_clear_errors(arguments, error, message):
    with pytest.raises(error, match=message):
        sample_categorical(*arguments)


def test_bad_seed_arguments():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="together"):
        sample_categorical(logits, seed=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        sample_categorical(logits, seed=1, offset=3)
    with pytest.raises(ValueError, match="not both"):
        sample_categorical(logits, torch.Generator(), seed=1, offset=0)


@needs_kernel
def test_opcheck():
    logits = torch.randn(9, 5)
    torch.library.opcheck(torch.ops.pynas.sample_categorical, (logits, 3, 8))
    torch.library.opcheck(torch.ops.pynas.sample_categorical, (logits.double(), -5, 0))


@needs_kernel
def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="inductor")
    def draw(logits: torch.Tensor, seed: int, offset: int):
        sample = sample_categorical(logits * 2.0, seed=seed, offset=offset)
        return sample.actions, sample.log_prob + 1.0

    logits = torch.randn(64, 7)
    actions, shifted = draw(logits, 11, 4)
    want = sample_categorical(logits * 2.0, seed=11, offset=4)
    assert torch.equal(actions, want.actions)
    torch.testing.assert_close(shifted, want.log_prob + 1.0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_and_cuda_draw_the_same_actions(dtype):
    logits = 3 * torch.randn(4096, 33, dtype=dtype, generator=torch.Generator().manual_seed(0))
    logits[:, ::4] = -float("inf")
    device_logits = logits.cuda()
    for seed in (0, 17, 2**63 + 5):
        torch.manual_seed(seed)
        cpu = [sample_categorical(logits) for _ in range(3)]
        gpu = [sample_categorical(device_logits) for _ in range(3)]
        for on_cpu, on_gpu in zip(cpu, gpu):
            assert torch.equal(on_cpu.actions, on_gpu.actions.cpu())
            torch.testing.assert_close(on_cpu.log_prob, on_gpu.log_prob.cpu())
            torch.testing.assert_close(on_cpu.entropy, on_gpu.entropy.cpu())
