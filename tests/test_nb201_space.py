"""The nb201 space: encoding, the benchmark's architecture strings, the built network."""
import ast
import csv
import itertools
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch import nn

from pynas.errors import UsageError
from pynas.spaces import SPACES, NB201Space, get_space
from pynas.spaces.base import SearchSpace
from pynas.spaces.flops import count_multiply_adds
from pynas.spaces.nb201 import OPERATIONS, NB201Cell

NB201_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201"
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
# NASLib numbers its operations differently and orders the edges (1,2) (1,3) (1,4)
# (2,3) (2,4) (3,4), i.e. node1<-0, node2<-0, node3<-0, node2<-1, node3<-1, node3<-2.
NASLIB_OPERATIONS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGE_OF_DECISION = (0, 1, 3, 2, 4, 5)


def shared_file(name: str) -> Path:
    path = NB201_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def naslib_arch(key: str) -> tuple[int, ...]:
    naslib_choices = ast.literal_eval(key)
    return tuple(
        OPERATIONS.index(NASLIB_OPERATIONS[naslib_choices[edge]])
        for edge in NASLIB_EDGE_OF_DECISION
    )


@pytest.fixture(scope="module")
def naslib_records() -> dict:
    with open(shared_file("naslib_zc_nasbench201.json")) as stream:
        return json.load(stream)


def test_every_cell_round_trips_through_its_string():
    space = NB201Space()
    assert space.num_choices == (5,) * 6
    all_archs = list(itertools.product(range(5), repeat=6))
    strings = [space.to_string(arch) for arch in all_archs]
    assert len(all_archs) == 15_625
    assert len(set(strings)) == 15_625
    assert [space.from_string(text) for text in strings] == all_archs


def test_string_format_is_the_official_one():
    space = NB201Space()
    assert space.to_string((3, 0, 3, 1, 0, 1)) == RESNET_CELL
    assert space.decision_names() == [
        "node1<-node0",
        "node2<-node0",
        "node2<-node1",
        "node3<-node0",
        "node3<-node1",
        "node3<-node2",
    ]


def test_benchmark_table_strings_parse_one_to_one():
    space = NB201Space()
    with open(shared_file("nb201.csv"), newline="") as stream:
        strings = [row["arch"] for row in csv.DictReader(stream)]
    archs = [space.from_string(text) for text in strings]
    assert len(strings) == 15_625
    assert set(archs) == set(itertools.product(range(5), repeat=6))
    assert [space.to_string(arch) for arch in archs] == strings
    # SOURCE.md: row 0 is avg_pool, conv1x1, skip, conv1x1, skip, skip.
    assert archs[0] == (4, 2, 1, 2, 1, 1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "|none~0|",
        "|none~0|+|none~0|none~1|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~2|none~1|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "none~0+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0||none~1|+|none~0|none~1|none~2|",
    ],
)
def test_malformed_strings_are_rejected(text):
    with pytest.raises(ValueError, match="nb201"):
        NB201Space().from_string(text)


def test_genotype_round_trip_and_errors():
    space = NB201Space()
    genotype = space.to_genotype((3, 0, 3, 1, 0, 1))
    assert genotype == {"space": "nb201", "arch": RESNET_CELL}
    assert json.loads(json.dumps(genotype)) == genotype
    assert space.from_genotype(genotype) == (3, 0, 3, 1, 0, 1)
    for bad in ({"space": "darts", "arch": RESNET_CELL}, {"space": "nb201"}, RESNET_CELL):
        with pytest.raises(ValueError):
            space.from_genotype(bad)


def test_out_of_range_decisions_are_rejected():
    space = NB201Space()
    for bad in ((5, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0), (0, 0, 0, 0, 0, -1)):
        with pytest.raises(ValueError):
            space.to_string(bad)


def test_cell_wiring_follows_the_edges():
    features = torch.randn(2, 4, 5, 5)

    def cell_output(operations):
        return NB201Cell(operations, 4)(features)

    none, skip = "none", "skip_connect"
    # node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x
    assert torch.equal(cell_output([skip] * 6), 4 * features)
    assert torch.equal(cell_output([none] * 6), torch.zeros_like(features))
    assert torch.equal(cell_output([none, none, none, skip, none, none]), features)
    assert torch.equal(cell_output([skip, none, none, none, skip, none]), features)
    # node1 has no input, so node2 = node1 = 0 reaches node3 as zero
    zeros = torch.zeros_like(features)
    assert torch.equal(cell_output([none, none, skip, none, none, skip]), zeros)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (3, 9, 9), (3, 12, 9),
                                   (3, 64, 48)])
def test_network_runs_forward_and_backward(shape):
    space = NB201Space(channels=4, cells_per_stage=1)
    model = space.build((1, 2, 3, 4, 0, 3), shape, num_outputs=7)
    images = torch.randn(3, *shape)
    logits = model(images)
    assert logits.shape == (3, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def nb201_resnet_cell_costs(
    channels: int, cells: int, size: int, in_channels: int, classes: int
) -> tuple[int, int]:
    """Parameters and multiply-adds of the ResNet-like cell network, counted by hand.

    That cell is ``x + conv3x3(conv3x3(x))``: two ReLU-Conv-BN of 3x3 per cell.
    """
    def conv(cin, cout, kernel):
        return cin * cout * kernel * kernel

    params = conv(in_channels, channels, 3) + 2 * channels  # stem conv + BN
    flops = conv(in_channels, channels, 3) * size * size
    width = channels
    for stage in range(3):
        if stage > 0:  # residual block: conv 3x3 stride 2, conv 3x3, shortcut conv 1x1
            size //= 2
            block = conv(width, 2 * width, 3) + conv(2 * width, 2 * width, 3)
            block += conv(width, 2 * width, 1)
            width *= 2
            params += block + 2 * (2 * width)  # two BNs
            flops += block * size * size
        cell = 2 * conv(width, width, 3)
        params += cells * (cell + 2 * (2 * width))
        flops += cells * cell * size * size
    params += 2 * width + width * classes + classes  # last BN, linear
    flops += width * classes
    return params, flops


@pytest.mark.parametrize(
    "channels,cells,size,in_channels,classes",
    [(16, 5, 32, 3, 10), (16, 5, 16, 3, 120), (8, 2, 28, 1, 10)],
)
def test_resnet_cell_matches_a_count_by_hand(channels, cells, size, in_channels, classes):
    space = NB201Space(channels=channels, cells_per_stage=cells)
    arch = space.from_string(RESNET_CELL)
    params, flops = nb201_resnet_cell_costs(channels, cells, size, in_channels, classes)
    assert space.count_parameters(arch, (in_channels, size, size), classes) == params
    assert space.count_flops(arch, (in_channels, size, size), classes) == flops


def test_resnet_cell_has_the_benchmark_size():
    # 0.559 M parameters and 78.56 M multiply-adds on CIFAR-10, for C=16, N=5
    space = NB201Space()
    arch = space.from_string(RESNET_CELL)
    assert space.count_parameters(arch) == 559_386
    assert space.count_flops(arch) == 78_561_920


def test_nb201_counts_of_every_cell_equal_counting_each_network(one_thread):
    space = NB201Space(channels=2, cells_per_stage=1)
    counts = space.counts_of_every_cell((3, 8, 8), 10)
    assert len(counts) == 5**6
    for arch in random.Random(1).sample(sorted(counts), 12):
        model = space.build(arch, (3, 8, 8), 10)
        parameters = sum(p.numel() for p in model.parameters())
        flops = SearchSpace.count_flops(space, arch, (3, 8, 8), 10)  # builds this very cell
        assert counts[arch] == (parameters, flops), arch


def test_nb201_extremes_are_the_benchmark_published_range(one_thread):
    """NAS-Bench-201 (Dong & Yang 2020) gives 7.78 to 220.11 MFLOPs and 0.07 to 1.53 MB
    of parameters for its CIFAR-10 networks."""
    space = NB201Space()
    none, convolutions = (0,) * 6, (3,) * 6
    assert (space.count_parameters(none), space.count_flops(none)) == (73_306, 7_783_040)
    assert (space.count_parameters(convolutions), space.count_flops(convolutions)) == (
        1_531_546, 220_119_680)


@pytest.mark.parametrize(
    "dataset,classes,sample",
    [("cifar10", 10, 300), ("cifar100", 100, 60), ("ImageNet16-120", 120, 60)],
)
def test_parameter_counts_match_naslib(naslib_records, dataset, classes, sample):
    # NASLib's zero-cost file records every sampled network's size in millions.
    space = NB201Space()
    records = list(naslib_records[dataset].items())[:sample]
    assert len(records) >= 60
    for key, record in records:
        count = space.count_parameters(naslib_arch(key), (3, 32, 32), classes)
        assert count == round(record["params"]["score"] * 1e6), key


def test_flop_counts_differ_from_naslib_only_by_elementwise_work(naslib_records):
    # NASLib's FLOPs also count pooling windows and per-element work after convolutions,
    # which this counter leaves out. All of that depends only on how many edges carry a
    # convolution or a pool, so architectures with the same counts must differ from
    # NASLib by the same amount: the convolution and linear work agrees exactly.
    space = NB201Space()
    differences = defaultdict(list)
    for key, record in list(naslib_records["ImageNet16-120"].items())[:50]:
        arch = naslib_arch(key)
        group = (sum(op in (2, 3) for op in arch), arch.count(4))
        flops = space.count_flops(arch, (3, 16, 16), 120)
        differences[group].append(round(record["flops"]["score"] * 1e6 - flops))
    assert sum(len(values) >= 2 for values in differences.values()) >= 8
    assert all(len(set(values)) == 1 for values in differences.values()), differences


def test_flop_counter_on_known_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8*32*32 outputs, 3*9 inputs each
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 8*32*32 outputs, 2*9 inputs each
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8*32*32 inputs, 4*4 outputs each
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )
    expected = 8 * 32 * 32 * 27 + 8 * 32 * 32 * 18 + 8 * 32 * 32 * 16 + 4 * 5
    model.train()
    assert count_multiply_adds(model, (3, 32, 32)) == expected
    assert model.training  # the counter restores the mode it found


def test_registry():
    assert SPACES["nb201"] is NB201Space
    space = get_space("nb201", channels=8, cells_per_stage=2)
    assert (space.name, space.channels, space.cells_per_stage) == ("nb201", 8, 2)
    with pytest.raises(UsageError, match="nb201"):
        get_space("nb999")
    for bad in ({"channels": 0}, {"cells_per_stage": 1.5}):
        with pytest.raises(UsageError):
            get_space("nb201", **bad)
