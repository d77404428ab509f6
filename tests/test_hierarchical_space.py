"""The hierarchical space (Liu et al. 2018): encoding, mutation, networks, counts, drawings."""
from __future__ import annotations

import json
import random

import pytest
import torch

from pynas.cli import main
from pynas.errors import UsageError
from pynas.search.evolution import RegularizedEvolution
from pynas.search.pnas import progression_for
from pynas.search.random_search import random_arch
from pynas.spaces import SPACES, HierarchicalFlatSpace, HierarchicalSpace, get_space
from pynas.spaces.base import Arch, SearchSpace
from pynas.spaces.hierarchical import PRIMITIVES, draw_hierarchical, motif_edges
from pynas.spaces.program import StepKind, decision_program

SPACE = HierarchicalSpace()
FLAT = HierarchicalFlatSpace()
# four levels, motifs of different sizes: the general case of the paper's notation
DEEP = HierarchicalSpace(levels=4, motifs=(3, 2), nodes=(3, 2, 4), channels=2)


def random_archs(space: SearchSpace, count: int, seed: int = 0) -> list[Arch]:
    generator = random.Random(seed)
    return [random_arch(space, generator) for _ in range(count)]


def tiny(nodes: int, motif: str, channels: int = 2) -> tuple[HierarchicalSpace, Arch]:
    """A flat space of ``nodes`` nodes and the architecture of its string ``motif``."""
    space = HierarchicalSpace(levels=2, nodes=nodes, channels=channels)
    return space, space.from_string(f"level2: ({motif})")


def test_defaults_are_the_papers_search_setting():
    assert (SPACE.levels, SPACE.motifs, SPACE.nodes) == (3, (6, 1), (4, 5))
    assert SPACE.num_choices == (7,) * (6 * 6 + 10)
    assert SPACE.operations(2) == ("none", *PRIMITIVES) and len(PRIMITIVES) == 6
    assert SPACE.operations(3) == ("none", *(f"motif_{m}" for m in range(6)))
    names = SPACE.decision_names()
    assert len(set(names)) == 46
    assert names[:2] == ["level2.motif0.node1<-node0", "level2.motif0.node2<-node0"]
    assert names[-1] == "level3.motif0.node4<-node3"
    assert (FLAT.levels, FLAT.nodes, FLAT.num_choices) == (2, (11,), (7,) * 55)
    assert DEEP.num_choices == (7,) * 9 + (4,) * 2 + (3,) * 6
    # one choice step per decision: random search, evolution and RL all read these
    program = decision_program(SPACE)
    assert [step.options for step in program] == list(SPACE.num_choices)
    assert {step.kind for step in program} == {StepKind.CHOICE}


def test_registered_and_rebuilt_from_defaults():
    assert SPACES["hierarchical"] is HierarchicalSpace
    assert SPACES["hierarchical-flat"] is HierarchicalFlatSpace
    assert get_space("hierarchical").input_kind == "image"
    assert get_space("hierarchical-flat").name == "hierarchical-flat"


@pytest.mark.parametrize("space", [SPACE, FLAT, DEEP], ids=["default", "flat", "deep"])
def test_random_architectures_round_trip_through_strings_and_genotypes(space):
    archs = random_archs(space, 200)
    strings = [space.to_string(arch) for arch in archs]
    assert len(set(strings)) == len(set(archs))
    assert [space.from_string(text) for text in strings] == archs
    for arch in archs:
        genotype = json.loads(json.dumps(space.to_genotype(arch)))
        assert genotype["space"] == space.name
        assert space.from_genotype(genotype) == arch


def test_string_and_genotype_name_each_edge():
    space, arch = tiny(3, "conv_1x1 | identity,none")
    assert arch == (1, 6, 0)
    assert space.to_string(arch) == "level2: (conv_1x1 | identity,none)"
    assert space.to_genotype(arch) == {"space": "hierarchical", "motifs": {"level2": [
        {"0->1": "conv_1x1", "0->2": "identity", "1->2": "none"}]}}
    text = SPACE.to_string(random_archs(SPACE, 1)[0])
    assert text.startswith("level2: (") and " ; level3: (motif_" in text
    assert text.count("(") == 7  # six level-2 motifs and the cell


def test_genotype_edges_may_come_in_any_order():
    space, arch = tiny(3, "conv_1x1 | identity,none")
    genotype = {"space": "hierarchical", "motifs": {"level2": [
        {"1->2": "none", "0->2": "identity", "0->1": "conv_1x1"}]}}
    assert space.from_genotype(genotype) == arch


BAD_STRINGS = [
    ("level2: (none)", "has 1 levels separated by ';', expected 2"),
    ("level2: x ; level3: (none)", "level 2 must read 'level2: (...) (...)'"),
    ("level3: (none) ; level2: (none)", "level 2 must read"),
    ("level2: (none | none,none | none,none,none) ; level3: "
     "(none | none,none | none,none,none | none,none,none,none)", "level 2 has 1 motifs, "
     "expected 6"),
]


@pytest.mark.parametrize("text, message", BAD_STRINGS)
def test_bad_strings_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match="^hierarchical: ") as error:
        SPACE.from_string(text)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("motif, message", [
    ("conv_1x1", "level 2 motif 0 (conv_1x1) has 1 nodes after the input, expected 2"),
    ("conv_1x1 | identity", "node 2 of level 2 motif 0 has 1 input edges, expected 2"),
    ("conv_1x1 | identity,conv_5x5", "edge 1->2 of level 2 motif 0 is 'conv_5x5', expected "
     "one of none, conv_1x1,"),
])
def test_bad_motif_strings_name_the_motif_and_edge(motif, message):
    space = HierarchicalSpace(levels=2, nodes=3)
    with pytest.raises(ValueError, match="^hierarchical: ") as error:
        space.from_string(f"level2: ({motif})")
    assert message in str(error.value)


def good_genotype() -> dict:
    return HierarchicalSpace(levels=3, motifs=2, nodes=(2, 3)).to_genotype((1, 2, 0, 1, 2))


@pytest.mark.parametrize("change, message", [
    (lambda g: g.update(space="nb201"), "not a hierarchical genotype"),
    (lambda g: g.pop("motifs"), "genotype has no 'motifs' dict of levels"),
    (lambda g: g["motifs"].pop("level3"), "genotype has motifs of level2, expected level2, "
     "level3"),
    (lambda g: g["motifs"].update(cell=[]), "genotype motifs key 'cell' must be 'levelN'"),
    (lambda g: g["motifs"].update(level3={"0->1": "motif_0"}), "genotype level3 must be a list "
     "of motifs"),
    (lambda g: g["motifs"]["level2"].pop(), "level 2 has 1 motifs, expected 2"),
    (lambda g: g["motifs"]["level3"][0].pop("1->2"), "level 3 motif 0 has edges 0->1, 0->2, "
     "expected 0->1, 0->2, 1->2"),
    (lambda g: g["motifs"]["level3"][0].update({"2->1": "none"}), "level3 motif 0 has edge "
     "'2->1', expected 'i->j' with i < j"),
    (lambda g: g["motifs"]["level3"][0].update({"1->2": "motif_2"}), "edge 1->2 of level 3 "
     "motif 0 is 'motif_2', expected one of none, motif_0, motif_1"),
    (lambda g: g["motifs"]["level2"][1].update({"0->1": 3}), "edge 0->1 of level 2 motif 1 is "
     "3, expected one of none,"),
])
def test_bad_genotypes_are_one_line_errors_naming_what_is_wrong(change, message):
    space = HierarchicalSpace(levels=3, motifs=2, nodes=(2, 3))
    genotype = good_genotype()
    assert space.from_genotype(genotype) == (1, 2, 0, 1, 2)
    change(genotype)
    with pytest.raises(ValueError, match="^hierarchical: ") as error:
        space.from_genotype(genotype)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("options, message", [
    ({"levels": 1}, "levels must be an integer of at least 2, got 1"),
    ({"nodes": (4,)}, "nodes must be an integer or 2 of them, one per level, got (4,)"),
    ({"nodes": 1}, "nodes must be an integer of at least 2, got 1"),
    ({"motifs": 0}, "motifs must be an integer of at least 1, got 0"),
    ({"levels": 4, "motifs": (2,), "nodes": 3}, "motifs must be an integer or 2 of them"),
    ({"channels": True}, "channels must be an integer of at least 1, got True"),
])
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match="^hierarchical: ") as error:
        HierarchicalSpace(**options)
    assert message in str(error.value)


@pytest.mark.parametrize("space", [SPACE, FLAT, DEEP], ids=["default", "flat", "deep"])
def test_mutation_changes_one_edge_of_one_motif_to_another_operation(space):
    generator = random.Random(0)
    changed_levels = set()
    for parent in random_archs(space, 300):
        child = space.mutate(parent, generator)
        assert space.validate(child) == child
        changed = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert len(changed) == 1
        changed_levels.add(space.decision_names()[changed[0]].split(".")[0])
    assert changed_levels == {f"level{level}" for level in space.level_numbers}


def test_mutation_picks_the_level_first_as_the_paper_does():
    # level 3 has one motif of 10 edges, level 2 six of 6: a uniform level puts about
    # half the mutations in the cell, a uniform decision only 10 / 46 of them
    generator = random.Random(1)
    arch = random_archs(SPACE, 1)[0]
    in_cell = sum(SPACE.mutate(arch, generator)[36:] != arch[36:] for _ in range(2000))
    assert 900 < in_cell < 1100


class RecordingSpace(SearchSpace):
    """Four decisions of 3 values; its own mutation records its calls and adds 1 to the
    decision its random generator picks."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[Arch, random.Random]] = []

    @property
    def num_choices(self) -> tuple[int, ...]:
        return (3,) * 4

    def decision_names(self) -> list[str]:
        return ["a", "b", "c", "d"]

    def to_string(self, arch: Arch) -> str:
        return "".join(map(str, arch))

    def from_string(self, text: str) -> Arch:
        return tuple(map(int, text))

    def to_genotype(self, arch: Arch) -> dict:
        return {"arch": list(arch)}

    def from_genotype(self, genotype: dict) -> Arch:
        return tuple(genotype["arch"])

    def build(self, arch, input_shape, num_outputs):
        raise NotImplementedError

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        self.calls.append((arch, rng))
        decision = rng.randrange(4)
        return arch[:decision] + ((arch[decision] + 1) % 3,) + arch[decision + 1:]


def evolve(strategy: RegularizedEvolution, steps: int) -> list[Arch]:
    asked = []
    for _ in range(steps):
        (arch,) = strategy.ask(1)
        asked.append(arch)
        strategy.tell(arch, float(sum(arch)))
    return asked


def test_evolution_mutates_with_the_spaces_own_mutation_and_resumes_alike():
    space = RecordingSpace()
    strategy = RegularizedEvolution(space, seed=0, population_size=3, sample_size=2)
    asked = evolve(strategy, 8)
    # the 3 random members, then 5 children, each from the space's mutation (called again
    # when it gives an architecture already proposed)
    assert len(space.calls) >= 5
    assert all(parent in asked for parent, _ in space.calls)
    assert len(set(asked)) == len(asked)
    assert all(isinstance(rng, random.Random) for _, rng in space.calls)
    # the mutation draws from the strategy's generator: a checkpoint carries its state
    restored = RegularizedEvolution(RecordingSpace(), seed=99, population_size=3, sample_size=2)
    restored.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    assert evolve(restored, 6) == evolve(strategy, 6)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 12, 9)])
@pytest.mark.parametrize("space", [HierarchicalSpace(channels=4), HierarchicalFlatSpace(
    channels=4)], ids=["hierarchical", "flat"])
def test_networks_build_and_train_for_any_image_size(space, shape, one_thread):
    for arch in random_archs(space, 2, seed=sum(shape)):
        model = space.build(arch, shape, 5)
        outputs = model(torch.randn(2, *shape))
        assert outputs.shape == (2, 5)
        outputs.sum().backward()


def test_images_smaller_than_8x8_and_feature_vectors_are_refused():
    with pytest.raises(UsageError, match="at least 8x8"):
        SPACE.build(random_archs(SPACE, 1)[0], (1, 7, 8), 10)
    with pytest.raises(UsageError, match="builds networks for images"):
        SPACE.check_input((64,))


# Counted by hand for C = 2 channels on (1, 8, 8) images, 3 outputs, with identity cells:
# stem conv 1*2*9 + BN 4; separable convs 2->4 (stride 2), 4->8 (stride 2), 8->8:
# depthwise 9C + pointwise C*C' + BN 2C' = 34, 84, 152; linear 8*3 + 3.
IDENTITY_PARAMETERS = 18 + 4 + 34 + 84 + 152 + 27
# stem 2*64*9; stride-2 sep conv at 4x4: 2*16*9 + 4*16*2; at 2x2: 4*4*9 + 8*4*4; the
# last at 2x2: 8*4*9 + 8*4*8; linear 8*3
IDENTITY_MULTIPLY_ADDS = 1152 + 288 + 128 + 144 + 128 + 288 + 256 + 24


@pytest.mark.parametrize("motif, parameters, multiply_adds", [
    ("identity", 0, 0),
    # a conv_1x1 in each cell: C*C weights + BN 2C, C*C multiply-adds per pixel
    ("conv_1x1", (4 + 4) + (16 + 8) + (64 + 16), 4 * 64 + 16 * 16 + 64 * 4),
])
def test_counts_of_a_one_edge_cell_by_hand(motif, parameters, multiply_adds):
    space, arch = tiny(2, motif)
    assert space.count_parameters(arch, (1, 8, 8), 3) == IDENTITY_PARAMETERS + parameters
    assert space.count_flops(arch, (1, 8, 8), 3) == IDENTITY_MULTIPLY_ADDS + multiply_adds


def test_a_node_with_two_inputs_concatenates_them_and_a_1x1_convolution_restores_c():
    space, arch = tiny(3, "identity | identity,identity")
    # node 2 concatenates node 0 and node 1 (2C channels): a 1x1 conv 2C -> C, BN, ReLU
    merges = (2 * 4 + 4) + (2 * 16 + 8) + (2 * 64 + 16)
    assert space.count_parameters(arch, (1, 8, 8), 3) == IDENTITY_PARAMETERS + merges
    assert space.count_flops(arch, (1, 8, 8), 3) == IDENTITY_MULTIPLY_ADDS + 3 * 512
    model = space.build(arch, (1, 8, 8), 3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_only_edges_on_a_path_from_input_to_output_are_built():
    # node 1 reaches no output: its conv_1x1 is not built
    space, arch = tiny(3, "conv_1x1 | identity,none")
    assert space.count_parameters(arch, (1, 8, 8), 3) == IDENTITY_PARAMETERS
    assert space.built_edges(arch) == {2: [[(0, 2, 6)]]}
    # a level-2 motif that computes nothing is a none edge in the cell
    space = HierarchicalSpace(levels=3, motifs=2, nodes=(2, 2), channels=2)
    empty_cell = space.from_string("level2: (none) (conv_1x1) ; level3: (motif_0)")
    assert space.built_edges(empty_cell) == {2: [[], [(0, 1, 1)]], 3: [[]]}
    assert space.count_parameters(empty_cell, (1, 8, 8), 3) == IDENTITY_PARAMETERS
    model = space.build(empty_cell, (1, 8, 8), 3)
    assert torch.isfinite(model(torch.randn(2, 1, 8, 8))).all()
    conv_cell = space.from_string("level2: (none) (conv_1x1) ; level3: (motif_1)")
    assert space.count_parameters(conv_cell, (1, 8, 8), 3) == IDENTITY_PARAMETERS + 8 + 24 + 80


def test_motif_drawings_one_per_level(tmp_path):
    arch = random_archs(SPACE, 1)[0]
    files = SPACE.draw(arch, tmp_path / "drawings")
    assert [path.name for path in files] == ["level2_motifs.dot", "level2_motifs.png",
                                             "level3_motifs.dot", "level3_motifs.png"]
    assert all(path.is_file() for path in files)
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in files[1::2])
    level2 = files[0].read_text()
    assert level2.startswith('digraph "hierarchical level 2"')
    assert level2.count("subgraph") == 6 and 'label="motif_5"' in level2
    genotype = SPACE.to_genotype(arch)
    live = sum(op != "none" for motif in genotype["motifs"]["level3"] for op in motif.values())
    assert files[2].read_text().count("->") == live and 'label="cell"' in files[2].read_text()
    flat = draw_hierarchical(FLAT.to_genotype(random_archs(FLAT, 1)[0]), tmp_path / "flat")
    assert [path.name for path in flat] == ["level2_motifs.dot", "level2_motifs.png"]


class TinyHierarchical(HierarchicalSpace):
    """Two level-2 motifs of 3 nodes, a cell of 3 nodes, 2 channels: quick to train."""

    def __init__(self) -> None:
        super().__init__(motifs=2, nodes=(3, 3), channels=2)


def test_evolution_searches_the_space_end_to_end_and_resumes(tmp_path, monkeypatch, capsys,
                                                               one_thread):
    monkeypatch.setitem(SPACES, "hierarchical", TinyHierarchical)
    out = tmp_path / "run"
    arguments = ["search", "evolution", "--space", "hierarchical", "--dataset", "digits",
                 "--epochs", "1", "--limit-train", "64", "--population", "2", "--sample-size",
                 "1", "--out", str(out)]
    assert main([*arguments, "--budget", "3"]) == 0, capsys.readouterr().err
    assert main([*arguments, "--budget", "4", "--resume"]) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "hierarchical" and result["evaluations"] == 4
    space = get_space("hierarchical")
    best = space.from_genotype(result["best"]["genotype"])
    assert space.to_string(best) == result["best"]["arch"]
    assert all(path.is_file() for path in space.draw(best, out))


@pytest.mark.parametrize("space, levels", [(SPACE, 22), (FLAT, 10), (DEEP, 3 * 2 + 2 * 1 + 3)])
def test_pnas_grows_each_motif_node_by_node_bottom_up_keeping_what_it_chose(space, levels):
    progression = progression_for(space)
    assert progression.levels == levels
    assert progression.steps == sorted(progression.steps)  # lower levels first
    top = space.levels
    rng = random.Random(3)
    children = progression.first_level()
    parent = None
    for depth, (level, motif, node) in enumerate(progression.steps, start=1):
        assert len(set(children)) == len(children) > 0
        for child in children:
            space.validate(child)
            progression.tokens(child)
        child = rng.choice(children)
        choices = space.motif_choices(child)
        if parent is not None:
            # every motif finished at an earlier level is kept as it was
            for earlier_level in range(2, level):
                assert choices[earlier_level] == space.motif_choices(parent)[earlier_level]
            assert choices[level][:motif] == space.motif_choices(parent)[level][:motif]
        if level < top:
            # the cell is the growing motif alone: one edge from input to output, up to it
            for upper in range(level + 1, top + 1):
                carried = motif + 1 if upper == level + 1 else 1
                expected = [carried if edge == (0, space.nodes[upper - 2] - 1) else 0
                            for edge in motif_edges(space.nodes[upper - 2])]
                assert choices[upper][0] == expected
        if level == 2 and node < space.nodes[0] - 1:
            # the nodes not chosen yet pass node `node` on to the output: identity chain
            values = dict(zip(motif_edges(space.nodes[0]), choices[2][motif]))
            identity = 1 + PRIMITIVES.index("identity")
            for (source, target), value in values.items():
                if target > node:
                    assert value == (identity if source == target - 1 else 0)
        parent = child
        children = progression.children(child, depth)
    assert children == []


def test_pnas_children_per_level_with_the_papers_settings_and_a_seeded_sample_beyond():
    progression = progression_for(SPACE)
    rng = random.Random(0)
    counts = []
    children = progression.first_level()
    for depth in range(1, progression.levels + 1):
        counts.append(len(children))
        children = progression.children(rng.choice(children), depth)
    assert counts == [7, 49, 343] * 6 + [6 * 7, 6 * 49, 6 * 343, 7 ** 4]
    flat = progression_for(FLAT)
    parent = flat.first_level()[3]
    for depth in range(1, 5):
        parent = flat.children(parent, depth)[-1]
    sample = flat.children(parent, 5)  # node 6: 7**6 children, more than max_children
    assert len(sample) == flat.max_children == len(set(sample))
    assert sample == flat.children(parent, 5)


def test_pnas_searches_the_space_end_to_end(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setitem(SPACES, "hierarchical", TinyHierarchical)
    out = tmp_path / "run"
    assert main(["search", "pnas", "--space", "hierarchical", "--dataset", "digits",
                 "--epochs", "1", "--limit-train", "64", "--surrogate", "mlp", "--budget",
                 "5", "--out", str(out)]) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "hierarchical" and result["evaluations"] == 5
    assert (out / "level3_motifs.png").is_file() and (out / "rank_correlation.json").is_file()
