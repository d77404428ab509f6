"""The mlp space (encodings, wiring, absent layers, counts, its progression), the input
checks of every space, image spaces on odd and oblong images, and every strategy run on
the mlp space with a made-up score."""
from __future__ import annotations

import json
import random
import statistics

import pytest
import torch
from torch import nn

from pynas.errors import UsageError
from pynas.search.evolution import RegularizedEvolution
from pynas.search.pnas import MLPProgression, ProgressiveSearch, progression_for
from pynas.search.random_search import RandomSearch
from pynas.search.rl.controller import Controller
from pynas.search.rl.reinforce import Reinforce
from pynas.spaces import SPACES, get_space
from pynas.spaces.darts import DartsSpace
from pynas.spaces.flops import count_multiply_adds
from pynas.spaces.hierarchical import HierarchicalFlatSpace, HierarchicalSpace
from pynas.spaces.macro import MacroSpace
from pynas.spaces.mlp import ACTIVATIONS, DROPOUTS, WIDTHS, MLPSpace
from pynas.spaces.nb201 import NB201Space
from pynas.spaces.pnas import PNASSpace
from pynas.spaces.program import Step, StepKind, decision_program

# Without pynas._C the controller samples with its PyTorch loop, which warns once.
pytestmark = [pytest.mark.filterwarnings("ignore:pynas.*using the PyTorch:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

SPACE = MLPSpace()


def random_archs(space: MLPSpace, count: int, seed: int = 0) -> list[tuple[int, ...]]:
    generator = random.Random(seed)
    return [tuple(generator.randrange(n) for n in space.num_choices) for _ in range(count)]


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- encodings ----

def test_decisions_and_program_follow_the_chain_layout():
    assert SPACE.num_choices == (6, 4, 3) + (6, 4, 3, 2) + (6, 4, 3, 2, 2) + (6, 4, 3, 2, 2, 2)
    assert len(SPACE.decision_names()) == 18 and SPACE.decision_names()[6] == "layer1.from0"
    program = decision_program(SPACE)
    assert program[:4] == [Step(StepKind.CHOICE, 6), Step(StepKind.CHOICE, 4),
                           Step(StepKind.CHOICE, 3), Step(StepKind.SKIPS, 0, True)]
    assert program[-1] == Step(StepKind.SKIPS, 3, records_anchor=True)
    for arch in map(tuple, Controller(program).sample(30).actions.tolist()):
        assert SPACE.validate(arch) == arch
    assert SPACES["mlp"] is MLPSpace and get_space("mlp", layers=2).layers == 2


def test_string_and_genotype_of_an_example():
    text = "64-relu-0.1 | 0 | 32-tanh-0.0<0 | 256-elu-0.3<1,2"
    arch = SPACE.from_string(text)
    assert arch == (3, 0, 1) + (0, 0, 0, 0) + (2, 1, 0, 1, 0) + (5, 3, 2, 0, 1, 1)
    assert SPACE.to_string(arch) == text
    genotype = SPACE.to_genotype(arch)
    assert genotype == {
        "space": "mlp",
        "layers": [{"width": 64, "activation": "relu", "dropout": 0.1, "inputs": []},
                   {"width": 0, "inputs": []},
                   {"width": 32, "activation": "tanh", "dropout": 0.0, "inputs": [0]},
                   {"width": 256, "activation": "elu", "dropout": 0.3, "inputs": [1, 2]}],
        "string": text,
    }
    assert SPACE.from_genotype(json.loads(json.dumps(genotype))) == arch


def test_round_trips_over_random_architectures():
    canonical_changed = 0
    for arch in random_archs(SPACE, 500):
        canonical = SPACE.canonical(arch)
        text = SPACE.to_string(arch)
        assert SPACE.from_string(text) == canonical
        assert SPACE.from_genotype(json.loads(json.dumps(SPACE.to_genotype(arch)))) == canonical
        assert SPACE.to_string(canonical) == text
        # the canonical form only zeroes the ignored activation and dropout of absent layers
        specs = SPACE.layer_specs(arch)
        changed = {index for index, (a, c) in enumerate(zip(arch, canonical)) if a != c}
        starts = [sum(3 + j for j in range(layer)) for layer in range(4)]
        ignored = {starts[n] + k for n, spec in enumerate(specs) if not spec["width"]
                   for k in (1, 2)}
        assert changed <= ignored
        canonical_changed += bool(changed)
    assert canonical_changed > 50  # absent layers with other settings were drawn


@pytest.mark.parametrize("text", [
    "64-relu-0.1 | 0 | 0",  # three layers in a space of four
    "64-relu | 0 | 0 | 0",
    "64-sigmoid-0.1 | 0 | 0 | 0",  # not an offered activation
    "48-relu-0.1 | 0 | 0 | 0",  # not an offered width
    "64-relu-0.2 | 0 | 0 | 0",  # not an offered dropout
    "64-relu-0.1 | 0<1 | 0 | 0",  # a layer reads only earlier layers
    "64-relu-0.1 | 0 | 0<0,0 | 0",
    "64-relu-0.1 | 0 | 0< | 0",
    "64-RELU-0.1 | 0 | 0 | 0",
    "",
])
def test_bad_strings_are_refused(text):
    with pytest.raises(ValueError, match="^mlp: "):
        SPACE.from_string(text)


@pytest.mark.parametrize("genotype", [
    {"space": "macro", "layers": []},
    {"space": "mlp"},
    {"space": "mlp", "layers": [{"width": 0}] * 3},
    {"space": "mlp", "layers": [{"width": 0}] * 3 + ["0"]},
    {"space": "mlp", "layers": [{"width": 16, "activation": "relu"}] + [{"width": 0}] * 3},
    {"space": "mlp", "layers": [{"width": True}] + [{"width": 0}] * 3},
    {"space": "mlp", "layers": [{"width": 0}] * 3 + [{"width": 0, "inputs": [3]}]},
    {"space": "mlp", "layers": [{"width": 0}] * 3 + [{"width": 0, "inputs": "0"}]},
    "mlp",
])
def test_bad_genotypes_are_refused(genotype):
    with pytest.raises(ValueError, match="^mlp: "):
        SPACE.from_genotype(genotype)


def test_bad_layer_counts_are_usage_errors():
    for layers in (0, -1, 2.0, True):
        with pytest.raises(UsageError, match="layers must be a positive integer"):
            MLPSpace(layers=layers)


# ---- networks ----

@pytest.mark.parametrize("outputs", [1, 3])
def test_networks_run_forward_and_backward_on_feature_vectors(outputs):
    for arch in random_archs(SPACE, 20, seed=outputs):
        model = SPACE.build(arch, (7,), outputs)
        result = model(torch.randn(5, 7))
        assert result.shape == (5, outputs)
        result.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        assert SPACE.count_parameters(arch, (7,), outputs) == parameters(model)


def test_an_all_absent_network_is_a_linear_model():
    arch = SPACE.from_string("0 | 0 | 0 | 0")
    model = SPACE.build(arch, (10,), 3)
    assert SPACE.count_parameters(arch, (10,), 3) == (10 + 1) * 3
    features = torch.randn(4, 10)
    torch.testing.assert_close(model(features), model.head(features))
    # however the absent layers are wired, each passes on what it reads
    wired = SPACE.from_string("0 | 0<0 | 0<1 | 0<0,1,2")
    assert SPACE.count_parameters(wired, (10,), 3) == (10 + 1) * 3


def test_absent_layers_pass_their_inputs_and_sources_are_read_once():
    # layer 1 is absent and reads layer 0: layer 2 reads layer 0 through it (once, though
    # it also reads layer 0 directly); layer 3 is absent and reads nothing: it passes the
    # features to the head, with layer 2, the other layer that nobody reads.
    arch = SPACE.from_string("32-relu-0.0 | 0<0 | 16-tanh-0.3<0,1 | 0")
    model = SPACE.build(arch, (5,), 2).eval()
    first, second = model.layers
    assert (first[0].in_features, second[0].in_features) == (5, 32)
    assert model.head.in_features == 5 + 16
    assert isinstance(second[2], nn.Dropout) and len(first) == 2  # no dropout of 0.0
    features = torch.randn(3, 5)
    hidden = torch.relu(first[0](features))
    expected = model.head(torch.cat([features, torch.tanh(second[0](hidden))], dim=1))
    torch.testing.assert_close(model(features), expected)


def test_the_head_always_reads_the_features_too():
    # a plain chain: only layer 3 is unread, yet the head also reads the feature vector
    arch = SPACE.from_string("32-relu-0.0 | 16-relu-0.0<0 | 16-elu-0.0<1 | 64-tanh-0.0<2")
    model = SPACE.build(arch, (7,), 1).eval()
    assert model.head.in_features == 7 + 64
    features = torch.randn(3, 7)
    hidden = features
    for layer in model.layers:
        hidden = layer(hidden)
    torch.testing.assert_close(model(features), model.head(torch.cat([features, hidden], 1)))


def test_counts_by_hand():
    arch = SPACE.from_string("64-relu-0.1 | 0 | 32-gelu-0.0<0 | 0<2")
    # layer 0: 10 -> 64; layer 2: 64 -> 32; layer 3 passes layer 2 to the head with
    # layer 1, which passes the features: head 10 + 32 -> 3
    weights = 10 * 64 + 64 * 32 + (10 + 32) * 3
    assert SPACE.count_parameters(arch, (10,), 3) == weights + 64 + 32 + 3
    assert SPACE.count_flops(arch, (10,), 3) == weights
    model = SPACE.build(arch, (10,), 3)
    assert count_multiply_adds(model, (10,)) == weights


# ---- input checks of every space ----

def test_images_on_the_mlp_space_are_refused_in_one_line():
    with pytest.raises(UsageError) as error:
        SPACE.build(SPACE.from_string("0 | 0 | 0 | 0"), (3, 32, 32), 10)
    message = str(error.value)
    assert message == ("the mlp space builds networks for feature vectors (F,); this data "
                       "has images of shape (3, 32, 32): use an image space (nb201, pnas, "
                       "macro, darts, hierarchical, hierarchical-flat)")
    with pytest.raises(UsageError, match="use an image space"):
        SPACE.count_parameters(SPACE.from_string("0 | 0 | 0 | 0"))  # CIFAR by default


def test_feature_vectors_on_an_image_space_are_refused_in_one_line():
    with pytest.raises(UsageError) as error:
        NB201Space().build((0,) * 6, (10,), 3)
    assert str(error.value) == ("the nb201 space builds networks for images (C, H, W); this "
                                "data has feature vectors of shape (10,): use --space mlp")


@pytest.mark.parametrize("shape,size", [((1, 6, 6), "6x6"), ((3, 32, 7), "32x7")])
def test_images_below_8x8_are_refused_naming_their_size(shape, size):
    for space in (NB201Space(), MacroSpace(layers=2)):
        with pytest.raises(UsageError, match=f"at least 8x8 pixels; this data has {size} images$"):
            space.build(tuple([0] * len(space.num_choices)), shape, 10)


@pytest.mark.parametrize("shape", [(), (3, 32), (3, 0, 8), (2.5,), (1, 8, 8, 8), None])
def test_malformed_shapes_are_refused(shape):
    for space in (SPACE, NB201Space()):
        with pytest.raises(UsageError, match=r"must be \(C, H, W\) for images or \(F,\)"):
            space.check_input(shape)


def test_every_registered_space_declares_its_input_kind():
    kinds = {name: space.input_kind for name, space in SPACES.items()}
    assert kinds == {"nb201": "image", "pnas": "image", "macro": "image", "darts": "image",
                     "mlp": "features", "hierarchical": "image", "hierarchical-flat": "image"}


SMALL_IMAGE_SPACES = {
    "nb201": NB201Space(channels=4, cells_per_stage=1),
    "pnas": PNASSpace(blocks=3, channels=4),
    "macro": MacroSpace(layers=4, strides=True),
    "darts": DartsSpace(channels=4, layers=3, auxiliary=True),
    "hierarchical": HierarchicalSpace(channels=4),
    "hierarchical-flat": HierarchicalFlatSpace(nodes=4, channels=4),
}


@pytest.mark.parametrize("name", SMALL_IMAGE_SPACES)
@pytest.mark.parametrize("shape", [(3, 12, 9), (1, 8, 8), (3, 64, 48), (2, 9, 15)])
def test_image_spaces_build_for_oblong_and_odd_images(name, shape):
    space = SMALL_IMAGE_SPACES[name]
    assert set(SMALL_IMAGE_SPACES) == {n for n, s in SPACES.items() if s.input_kind == "image"}
    for arch in random_archs(space, 2, seed=sum(shape)):
        model = space.build(arch, shape, 5)
        outputs = model(torch.randn(2, *shape))
        assert outputs.shape == (2, 5)
        outputs.sum().backward()
        assert space.count_flops(arch, shape, 5) > 0


# ---- the progression of progressive search ----

def test_progression_grows_layer_by_layer_with_absent_layers_after():
    progression = progression_for(SPACE)
    assert isinstance(progression, MLPProgression) and progression.levels == 4
    distinct_layers = 1 + (len(WIDTHS) - 1) * len(ACTIVATIONS) * len(DROPOUTS)
    first = progression.first_level()
    assert len(set(first)) == len(first) == distinct_layers == 61
    assert SPACE.to_string(first[0]) == "0 | 0<0 | 0<1 | 0<2"
    parent = SPACE.from_string("64-relu-0.1 | 0<0 | 0<1 | 0<2")
    assert parent in first
    second = progression.children(parent, 1)
    assert len(set(second)) == len(second) == distinct_layers * 2
    assert all(SPACE.to_string(child).startswith("64-relu-0.1 | ") for child in second)
    assert all(SPACE.to_string(child).endswith(" | 0<1 | 0<2") for child in second)
    third = progression.children(second[-1], 2)
    fourth = progression.children(third[-1], 3)
    assert (len(third), len(fourth)) == (distinct_layers * 4, distinct_layers * 8)
    assert progression.children(fourth[0], 4) == []
    assert all(progression.key(child) == child for child in first + second + third + fourth)


def test_a_level_network_is_the_network_of_its_first_layers():
    progression = progression_for(SPACE)
    for child in progression.children(SPACE.from_string("32-elu-0.0 | 0<0 | 0<1 | 0<2"), 1):
        text = SPACE.to_string(child)
        two_layers = MLPSpace(layers=2).from_string(text.rsplit(" | ", 2)[0])
        assert SPACE.count_parameters(child, (6,), 2) == MLPSpace(layers=2).count_parameters(
            two_layers, (6,), 2), text


def test_many_children_are_a_fixed_seeded_sample():
    progression = progression_for(SPACE)
    parent = progression.children(progression.first_level()[7], 1)[3]
    every = progression.children(parent, 2)
    progression.max_children = 100
    sample = progression.children(parent, 2)
    assert len(set(sample)) == 100 and set(sample) <= set(every)
    assert progression.children(parent, 2) == sample  # the same on every call
    other = progression.children(progression.children(progression.first_level()[8], 1)[3], 2)
    assert [SPACE.layer_specs(c)[2] for c in other] != [SPACE.layer_specs(c)[2] for c in sample]


def test_tokens_describe_the_chosen_layers():
    progression = progression_for(SPACE)
    width, activation = progression._width_token, progression._activation_token
    dropout, absent, reads = progression._dropout_token, progression._absent, progression._reads
    assert progression.tokens(SPACE.from_string("0 | 0<0 | 0<1 | 0<2")) == [
        [0, width, absent, absent]]
    rows = progression.tokens(SPACE.from_string("64-relu-0.1 | 0 | 16-tanh-0.3<0,1 | 0<2"))
    assert rows == [
        [0, width + WIDTHS.index(64), activation, dropout + 1],
        [1, width, absent, absent],
        [2, width + 1, activation + ACTIVATIONS.index("tanh"), dropout + 2],
        [2, reads, 0, reads], [2, reads, 1, reads],
    ]
    for arch in random_archs(SPACE, 50):
        tokens = progression.tokens(arch)
        assert all(len(row) == 4 and 0 <= min(row) and max(row) < progression.vocabulary_size
                   for row in tokens)


# ---- every strategy on the mlp space, with a made-up score ----

def made_up_score(space: MLPSpace, arch) -> float:
    """Percent: present relu layers of width 64, a little for each skip."""
    specs = space.layer_specs(arch)
    good = sum(spec["width"] == 64 and spec["activation"] == "relu" for spec in specs)
    return 20.0 * good + sum(len(spec["inputs"]) for spec in specs)


def ask_and_tell(strategy, evaluations: int) -> list[tuple[int, ...]]:
    """Ask one, tell its score, until ``evaluations`` or the strategy is finished."""
    asked, space = [], strategy.space
    while len(asked) < evaluations and not strategy.finished():
        batch = strategy.ask(1)
        assert batch, "the strategy had nothing to propose"
        asked += batch
        strategy.tell(batch[0], made_up_score(space, batch[0]))
    for arch in asked:
        assert space.validate(arch) == arch
    return asked


def mean_score(archs) -> float:
    return statistics.mean(made_up_score(SPACE, arch) for arch in archs)


def test_random_search_on_the_mlp_space():
    asked = ask_and_tell(RandomSearch(SPACE, seed=0), 100)
    assert len(set(asked)) == 100
    best = max(asked, key=lambda arch: made_up_score(SPACE, arch))
    assert SPACE.build(best, (4,), 2)(torch.randn(2, 4)).shape == (2, 2)


def test_evolution_on_the_mlp_space_improves_on_its_random_start():
    asked = ask_and_tell(RegularizedEvolution(SPACE, seed=0, population_size=10,
                                              sample_size=5), 200)
    assert mean_score(asked[-30:]) > mean_score(asked[:10]) + 10


def test_rl_on_the_mlp_space_learns_the_made_up_score():
    strategy = Reinforce(SPACE, seed=0, batch=10, learning_rate=0.05)
    asked = ask_and_tell(strategy, 300)
    assert strategy.updates == 30
    assert mean_score(asked[-50:]) > mean_score(asked[:50]) + 5


def test_progressive_search_on_the_mlp_space():
    space = MLPSpace(layers=3)
    strategy = ProgressiveSearch(space, seed=0, beam=3, initial=15, members=2,
                                 surrogate="mlp", surrogate_steps=60)
    asked = ask_and_tell(strategy, 100)
    assert strategy.finished() and len(asked) == 15 + 3 + 3
    specs = [space.layer_specs(arch) for arch in asked]
    # level L asks networks whose layers past L are absent, each reading the one before
    for level, start, stop in [(1, 0, 15), (2, 15, 18), (3, 18, 21)]:
        for layers in specs[start:stop]:
            assert all(layer == {"width": 0, "inputs": [n - 1]}
                       for n, layer in enumerate(layers) if n >= level)
    parents = {space.to_string(arch).split(" | ")[0] for arch in asked[:15]}
    assert all(space.to_string(arch).split(" | ")[0] in parents for arch in asked[15:])
    assert [record["level"] for record in strategy.rank_correlations()] == [2, 3]
