"""The pnas space: counts, canonical strings, genotypes, tokens and the built network."""
import itertools
import random

import pytest
import torch

from pynas.errors import UsageError
from pynas.spaces.pnas import (
    OPERATIONS,
    Block,
    PNASSpace,
    count_cells,
    make_operation,
    unused_blocks,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def random_arch(space: PNASSpace, generator: random.Random) -> tuple[int, ...]:
    return tuple(generator.randrange(count) for count in space.num_choices)


def test_one_block_cells_are_256_with_mirror_images_and_136_without():
    space = PNASSpace(blocks=1)
    every_decision_tuple = list(itertools.product(*map(range, space.num_choices)))
    assert len(every_decision_tuple) == count_cells(1) == 256  # the paper's |B_1|
    distinct = {space.to_string(arch) for arch in every_decision_tuple}
    assert len(distinct) == count_cells(1, mirror_images=False) == 136
    assert sorted(map(space.to_string, space.cells_with_one_block())) == sorted(distinct)


def test_two_block_counts_match_enumeration_and_children():
    space = PNASSpace(blocks=2)
    ordered = [(1,) + decisions
               for decisions in itertools.product(*map(range, space.num_choices[1:]))]
    assert len(ordered) == count_cells(2) == 256 * 24 * 24
    distinct = {space.to_string(arch) for arch in ordered}
    assert len(distinct) == count_cells(2, mirror_images=False) == 136 * 300
    children = [child for parent in space.cells_with_one_block()
                for child in space.children(parent)]
    assert len(children) == len(set(children)) == len(distinct)
    assert {space.to_string(child) for child in children} == distinct
    assert space.children(children[0]) == []  # already at B blocks


def test_strings_round_trip_to_the_canonical_cell():
    space = PNASSpace()
    generator = random.Random(0)
    for _ in range(200):
        arch = random_arch(space, generator)
        canonical = space.canonical(arch)
        assert space.from_string(space.to_string(arch)) == canonical
        assert space.from_genotype(space.to_genotype(arch)) == canonical
        assert space.canonical(canonical) == canonical
        assert space.num_blocks(arch) == arch[0] + 1 == space.to_string(arch).count("|") + 1


def test_mirror_images_and_ignored_slots_are_the_same_cell():
    space = PNASSpace(blocks=3)
    cell = (0, 1, 0, 3, 6) + (0,) * 8
    mirrored = (0, 0, 1, 6, 3) + (1, 2, 4, 5) + (3, 0, 7, 7)  # swapped; junk in unused slots
    assert space.to_string(cell) == space.to_string(mirrored) == "conv_1x7_7x1~0+max_pool_3x3~1"
    assert space.canonical(mirrored) == space.canonical(cell) == (0, 0, 1, 6, 3) + (0,) * 8


def test_genotype_lists_blocks_and_unused_outputs():
    space = PNASSpace(blocks=3)
    arch = space.from_string("sep_conv_3x3~0+identity~1|max_pool_3x3~2+sep_conv_5x5~1"
                             "|avg_pool_3x3~0+dil_conv_3x3~0")
    genotype = space.to_genotype(arch)
    assert genotype["blocks"][0] == [["sep_conv_3x3", 0], ["identity", 1]]
    assert genotype["concat"] == [3, 4]  # block 2 (node 2) is read by block 3
    assert unused_blocks(space.cell_blocks(arch)) == [3, 4]


@pytest.mark.parametrize("text, message", [
    ("sep_conv_3x3~2+identity~0", "reads node 2"),
    ("conv_3x3~0+identity~0", "must be 'operation~input'"),
    ("sep_conv_3x3~0", "must be 'op~input"),
    ("|".join(["identity~0+identity~1"] * 6), "1..5 blocks"),
])
def test_malformed_strings_raise_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        PNASSpace().from_string(text)


def test_bad_network_options_are_usage_errors():
    with pytest.raises(UsageError, match="blocks"):
        PNASSpace(blocks=0)


def test_tokens_are_one_row_of_four_per_block():
    space = PNASSpace()
    arch = space.from_string("sep_conv_3x3~0+identity~1|max_pool_3x3~2+sep_conv_5x5~1")
    offset = 2 + space.blocks

    def token(name: str) -> int:
        return offset + OPERATIONS.index(name)

    assert space.tokens(arch) == [
        [0, 1, token("sep_conv_3x3"), token("identity")],
        [1, 2, token("sep_conv_5x5"), token("max_pool_3x3")],
    ]
    assert max(max(row) for row in space.tokens(arch)) < space.vocabulary_size


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_operation_keeps_channels_and_divides_resolution(name, stride):
    features = torch.randn(2, 6, 8, 8)
    assert make_operation(name, 6, stride)(features).shape == (2, 6, 8 // stride, 8 // stride)


def test_network_trains_for_every_cell_size():
    space = PNASSpace(blocks=3, channels=4)
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    texts = ["sep_conv_7x7~1+conv_1x7_7x1~0",
             "identity~0+avg_pool_3x3~1|dil_conv_3x3~2+max_pool_3x3~0",
             "identity~0+identity~1|identity~2+identity~2|sep_conv_3x3~3+identity~0"]
    for text in texts:
        model = space.build(space.from_string(text), (1, 8, 8), num_outputs=10)
        logits = model(images)
        assert logits.shape == (4, 10)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # more blocks, more arithmetic: the last cell has one more separable convolution
    small, large = (space.count_flops(space.from_string(t), (1, 8, 8)) for t in texts[1:])
    assert 0 < small < large


def test_stride_two_cells_halve_resolution_and_double_channels():
    space = PNASSpace(blocks=2, channels=4, cells_per_stage=2)
    model = space.build(space.from_string("identity~0+identity~1|sep_conv_3x3~2+identity~1"),
                        (3, 16, 16), num_outputs=10)
    shapes = []
    hooks = [cell.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
             for cell in model.cells]
    model(torch.randn(1, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    # one unused block (node 3) per cell: channels C, 2C, 4C at 16, 8, 4 pixels
    assert shapes == [(1, 4, 16, 16)] * 2 + [(1, 8, 8, 8)] * 3 + [(1, 16, 4, 4)] * 3
    assert Block(1, 0, 3, 5).canonical() == Block(0, 1, 5, 3)
