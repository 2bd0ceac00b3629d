"""Placement properties: `place` checked over generated fleets with hypothesis.

A generated case is a fleet (nodes with 0-8 GPUs of a few products, node labels, CPU servers
and GPU servers bound to 1-2 GPUs of one node, pooled or not, exclusive, tagged, of an
isolated framework or not) and a request (1-3 models, constraints, maybe a pool). GPU "used"
figures are drawn independently of the servers on them: placement must be safe either way.

The filters a live server must pass, and what can never fit, are restated here (`eligible`,
`fits`, `never_fits`) independently of the implementation, and the properties are checked
against them. Every property runs 300 derandomized examples, so CI sees the same cases.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import combinations
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tms_core.ids import ServerId
from tms_core.placement import (
    Constraints,
    Decision,
    FleetIndex,
    GpuView,
    JoinServer,
    ModelNeed,
    NodeView,
    PoolSpec,
    Reject,
    ServerView,
    StartServer,
    Wait,
    place,
)

GiB = 1024**3
STEP = GiB // 4
PRODUCTS = ("NVIDIA A100 80GB", "NVIDIA H100 80GB", "NVIDIA L4")
WANTED_PRODUCTS = ("", "", "", "", "", "A100", "H100", "L4", "80GB")
ISOLATED = frozenset({"pytorch", "tensorflow"})
FRAMEWORKS = ("python", "onnxruntime", "pytorch")
NAMES = ("a", "b", "c", "d")
TAGS = ("web", "batch", "team=ml", "team=cv")
BINARIES = ("", "", "", "", "", "triton-2")
POOLS = ("p1", "p2")

PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True)


def uri(name: str, variant: int) -> str:
    return f"file:///m{variant}/{name}"


@dataclass(frozen=True)
class Case:
    models: tuple[ModelNeed, ...]
    servers: tuple[ServerView, ...]
    nodes: tuple[NodeView, ...]
    want: Constraints
    pool: PoolSpec | None
    binary: str
    server_capacity: int
    max_servers: int

    def decide(self) -> Decision:
        return place(
            list(self.models),
            list(self.servers),
            server_capacity=self.server_capacity,
            max_servers=self.max_servers,
            binary=self.binary,
            pool=self.pool,
            constraints=self.want,
            nodes=list(self.nodes),
            isolated_frameworks=ISOLATED,
        )

    @property
    def need(self) -> int:
        return sum(m.memory_bytes for m in self.models)

    def server(self, sid: str) -> ServerView:
        matches = [s for s in self.servers if s.id == sid]
        assert len(matches) == 1, f"JoinServer names {sid!r}, not one server of the input"
        return matches[0]

    def node(self, name: str) -> NodeView | None:
        return next((n for n in self.nodes if n.name == name), None)

    def gpu(self, node: str, index: int) -> GpuView | None:
        found = self.node(node)
        return next((g for g in found.gpus if g.index == index), None) if found else None

    def gpus_of(self, server: ServerView) -> list[GpuView | None]:
        return [self.gpu(server.node, i) for i in server.gpus]

    def node_matches(self, name: str) -> bool:
        found = self.node(name)
        labels = found.labels if found else {}
        return all(labels.get(k) == v for k, v in self.want.node_selector.items())


# --- strategies -----------------------------------------------------------------------------
#
# Each entity (a node with its GPUs, a server, a model, the constraints, the pool) reads its
# choices off one drawn string of bytes, a byte a choice: a dozen draws a case instead of some
# hundreds keep a few thousand examples within a few seconds. Hypothesis draws the bytes
# uniformly and shrinks them towards zero, that is towards the first option of each choice,
# so the options are listed simplest first.

T = TypeVar("T")
ROLLS = st.binary(min_size=32, max_size=32)


class Dice:
    """Choices read off drawn bytes, one byte each."""

    def __init__(self, rolls: bytes) -> None:
        self.rolls = iter(rolls)

    def pick(self, options: Sequence[T]) -> T:
        return options[next(self.rolls) % len(options)]

    def upto(self, n: int) -> int:
        return self.pick(range(n + 1))

    def chance(self, one_in: int) -> bool:
        return self.pick(range(one_in)) == one_in - 1


def tag_sets(empties: int) -> tuple[frozenset[str], ...]:
    """Sets of at most two tags, the empty one `empties` times (so it comes up often)."""
    sets = [frozenset({t}) for t in TAGS] + [frozenset(p) for p in combinations(TAGS, 2)]
    return (frozenset(),) * empties + tuple(sets)


SERVER_TAGS = tag_sets(4)
COLOCATE_TAGS = tag_sets(60)
AVOID_TAGS = tag_sets(20)
GPU_CAPACITIES = tuple(g * GiB for g in (8, 16, 24, 40, 80))
SERVER_CAPACITIES = tuple(g * GiB for g in (8, 16, 32))


def fraction_of(dice: Dice, capacity: int) -> int:
    """0, capacity or a sixteenth-multiple in between: the edges come up often."""
    return capacity * dice.upto(16) // 16


@dataclass(frozen=True)
class Shape:
    """What the lease asks of a server. The fleet leans towards it (some of each choice's
    options copy it) so that joins and starts are common, not only rejects and waits."""

    pool: str
    binary: str
    group: str
    gpus: int
    product: str
    selector: Mapping[str, str]
    lean: int
    """How many times a choice lists the lease's value."""
    gpu_capacity: int = 0
    """When set, every GPU of the fleet has this capacity."""


def node_view(draw: st.DrawFn, name: str, lease: Shape) -> NodeView:
    dice = Dice(draw(ROLLS))
    count = dice.upto(8)
    node_product = dice.pick(
        tuple(p for p in PRODUCTS if lease.product in p) * lease.lean + PRODUCTS
    )
    node_capacity = lease.gpu_capacity or dice.pick(GPU_CAPACITIES)
    labels = {}
    zone = dice.pick((None, "a", "a", "b"))
    if zone:
        labels["zone"] = zone
    if dice.chance(2):
        labels["tier"] = "gold"
    if dice.chance(2 if lease.lean > 2 else 6):
        labels.update(lease.selector)
    gpus = []
    for index in range(count):
        # Mostly one kind of GPU per node, now and then a mixed one.
        capacity = lease.gpu_capacity or dice.pick((node_capacity,) * 3 + GPU_CAPACITIES)
        product = dice.pick((node_product,) * 4 + PRODUCTS)
        gpus.append(GpuView(name, index, product, capacity, fraction_of(dice, capacity)))
    return NodeView(name, tuple(gpus), labels)


def server_view(
    draw: st.DrawFn,
    sid: str,
    nodes: tuple[NodeView, ...],
    lease: Shape,
    uniform_capacity: int | None,
) -> ServerView:
    dice = Dice(draw(ROLLS))
    node = ""
    gpus: tuple[int, ...] = ()
    count = dice.pick((lease.gpus,) * lease.lean + (0, 1, 2))
    gpu_nodes = [n for n in nodes if len(n.gpus) >= count]
    if count and gpu_nodes:
        on = dice.pick(gpu_nodes)
        node = on.name
        indices = [g.index for g in on.gpus]
        first = dice.pick(indices)
        gpus = (first,)
        if count == 2:
            gpus = tuple(sorted((first, dice.pick([i for i in indices if i != first]))))
        # Now and then the inventory no longer lists the server's node or one of its GPUs.
        stale = dice.pick((None,) * 10 + ("node", "gpu"))
        if stale == "node":
            node = "gone"
        elif stale == "gpu":
            gpus = (*gpus[1:], 8)
    elif nodes and dice.chance(2):
        node = dice.pick([n.name for n in nodes])
    capacity = dice.pick(SERVER_CAPACITIES)
    if uniform_capacity is not None and not gpus:
        capacity = uniform_capacity
    used = fraction_of(dice, capacity)

    models = {}
    for name in NAMES:
        variant = dice.pick((None, None, None, 0, 1))
        if variant is not None:
            models[name] = uri(name, variant)
    # Some of those models are held by the server's leases, counted in what it uses.
    held = {}
    room = used
    for name, model_uri in models.items():
        if dice.chance(2):
            counted = min(room, dice.pick((0, GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB)))
            held[name] = (model_uri, counted)
            room -= counted
    pool = dice.pick((lease.pool,) * (lease.lean + 1) + ("", *POOLS))
    quota_capacity = dice.pick(range(1, 9)) if pool else 0
    return ServerView(
        id=ServerId(sid),
        capacity_bytes=capacity,
        used_bytes=used,
        models=models,
        accepting=not dice.chance(6),
        binary=dice.pick((lease.binary, lease.binary, *BINARIES)),
        pool=pool,
        quota_capacity=quota_capacity,
        quota_used=dice.upto(quota_capacity),
        node=node,
        gpus=gpus,
        exclusive=dice.chance(8),
        framework_group=dice.pick((lease.group,) * lease.lean + ("", "pytorch", "tensorflow")),
        tags=dice.pick(SERVER_TAGS),
        held=held,
    )


def request(draw: st.DrawFn) -> tuple[ModelNeed, ...]:
    dice = Dice(draw(ROLLS))
    count = dice.pick((1, 1, 1, 2, 3))
    # One framework for the whole lease most of the time (so isolated leases get placed),
    # otherwise one each (so mixed leases come up).
    shared = dice.pick((*FRAMEWORKS, "python", None))
    models = {}
    for _ in range(count):
        model = Dice(draw(ROLLS))
        name = model.pick(NAMES)
        variant = model.pick((0, 0, 0, 1))
        if model.chance(2):
            # Round sizes, whose sums hit server and GPU capacities exactly.
            memory = model.pick((0, GiB, 2 * GiB, 4 * GiB, 4 * GiB, 8 * GiB, 16 * GiB, 40 * GiB))
        else:
            largest = model.pick((GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB, 32 * GiB))
            memory = model.upto(largest // STEP) * STEP
        framework = shared or model.pick(FRAMEWORKS)
        models.setdefault(name, ModelNeed(name, uri(name, variant), memory, framework))
    return tuple(models.values())


def constraints(draw: st.DrawFn) -> Constraints:
    dice = Dice(draw(ROLLS))
    selector = {}
    zone = dice.pick((None, None, None, "a", "a", "b"))
    if zone:
        selector["zone"] = zone
    if dice.chance(4):
        selector["tier"] = "gold"
    return Constraints(
        gpus=dice.pick((0, 1, 2, 0)),
        gpu_product=dice.pick(WANTED_PRODUCTS),
        node_selector=selector,
        exclusive=dice.chance(8),
        colocate_with=dice.pick(COLOCATE_TAGS),
        avoid=dice.pick(AVOID_TAGS),
    )


def pool_spec(draw: st.DrawFn, one_in: int) -> PoolSpec | None:
    dice = Dice(draw(ROLLS))
    if not dice.chance(one_in):
        return None
    return PoolSpec(
        name=dice.pick(POOLS),
        quota=dice.pick((1, 1, 1, 2, 2, 3, 4)),
        quota_per_server=dice.pick((8, 4, 4, 2, 1)),
        max_servers=dice.pick((1, 2, 3, 4)),
        server_memory=dice.pick(SERVER_CAPACITIES),
    )


@st.composite
def cases(
    draw: st.DrawFn, *, crowded: bool = False, uniform: bool = False, one_gpu_size: bool = False
) -> Case:
    """A fleet and a request.

    `crowded`: servers lean harder towards the lease, so that several are eligible at once.
    `uniform`: an unpooled CPU lease, and every CPU server has the configured capacity.
    `one_gpu_size`: every GPU has 80 GiB (what the index's sorted paths serve).
    """
    dice = Dice(draw(ROLLS))
    server_capacity = dice.pick(SERVER_CAPACITIES)
    node_count = dice.pick((1, 2, 3, 2, 3, 0))
    server_count = dice.pick(range(2, 9)) if crowded else dice.upto(8)
    max_servers = dice.pick(range(1, 9))
    binary = dice.pick(BINARIES)
    models = request(draw)
    want = constraints(draw)
    pool = pool_spec(draw, 2 if crowded else 4)
    if crowded and not dice.chance(4):
        want = replace(want, exclusive=False)
    if uniform:
        want, pool = replace(want, gpus=0), None
    shape = Shape(
        pool=pool.name if pool else "",
        binary=binary,
        group=lease_group(models) or "",
        gpus=want.gpus,
        product=want.gpu_product,
        selector=want.node_selector,
        lean=8 if crowded else 2,
        gpu_capacity=80 * GiB if one_gpu_size else 0,
    )
    nodes = tuple(node_view(draw, f"n{i}", shape) for i in range(node_count))
    servers = tuple(
        server_view(draw, f"s-{i}", nodes, shape, server_capacity if uniform else None)
        for i in range(server_count)
    )
    return Case(
        models=models,
        servers=servers,
        nodes=nodes,
        want=want,
        pool=pool,
        binary=binary,
        server_capacity=server_capacity,
        max_servers=max_servers,
    )


# --- the reference filters ------------------------------------------------------------------


def lease_group(models: tuple[ModelNeed, ...]) -> str | None:
    """The isolated framework the lease needs a server of, "" for none; None when it mixes."""
    kinds = {m.framework for m in models}
    groups = kinds & ISOLATED
    if not groups:
        return ""
    if len(kinds) > 1:
        return None
    (group,) = groups
    return group


def conflicts(case: Case, server: ServerView) -> bool:
    """A model of the lease has the name of a different model the server holds."""
    return any(m.name in server.models and server.models[m.name] != m.uri for m in case.models)


def eligible(case: Case, server: ServerView) -> bool:
    """Every filter of a live server but memory and quota."""
    want, pool = case.want, case.pool
    if pool is not None:
        if server.pool != pool.name:
            return False
    elif server.pool != "" or server.binary != case.binary:
        return False
    if not server.accepting or server.exclusive or want.exclusive:
        return False
    if len(server.gpus) != want.gpus or server.framework_group != lease_group(case.models):
        return False
    if (want.gpus or want.node_selector) and not case.node_matches(server.node):
        return False
    if want.gpus:
        gpus = case.gpus_of(server)
        if any(g is None or want.gpu_product not in g.product for g in gpus):
            return False
    if want.avoid & server.tags:
        return False
    if want.colocate_with and not want.colocate_with & server.tags:
        return False
    return not conflicts(case, server)


def fits(case: Case, server: ServerView) -> bool:
    """The server has the lease's memory (its share on each GPU) and quota free."""
    if case.pool is not None and server.free_quota < case.pool.quota:
        return False
    if server.gpus:
        gpus = case.gpus_of(server)
        return all(g is not None and g.free_bytes * len(gpus) >= adds(case, server) for g in gpus)
    return server.free_bytes >= adds(case, server)


def joinable(case: Case) -> list[ServerView]:
    return [s for s in case.servers if eligible(case, s) and fits(case, s)]


def never_fits(case: Case) -> bool:
    """However empty the fleet, no server placement could start would hold the lease."""
    want, pool = case.want, case.pool
    if want.exclusive and want.colocate_with:
        return True  # a server of its own can have no one beside it
    if want.node_selector and not any(case.node_matches(n.name) for n in case.nodes):
        return True
    if pool is not None and pool.quota > pool.quota_per_server:
        return True
    if want.gpus == 0:
        return case.need > (pool.server_memory if pool else case.server_capacity)
    for node in case.nodes:
        if not case.node_matches(node.name):
            continue
        big_enough = [
            g
            for g in node.gpus
            if want.gpu_product in g.product and g.capacity_bytes * want.gpus >= case.need
        ]
        if len(big_enough) >= want.gpus:
            return False
    return True


def adds(case: Case, server: ServerView) -> int:
    """The memory the lease adds to the server: what its leases do not hold already."""
    total = 0
    for model in case.models:
        uri, counted = server.held.get(model.name, ("", 0))
        total += max(0, model.memory_bytes - counted) if uri == model.uri else model.memory_bytes
    return total


def leftover(case: Case, server: ServerView) -> tuple[int, Fraction, Fraction]:
    """How the lease fills the server: the memory it adds, then how loosely ((quota, memory)
    as fractions of capacity)."""
    quota = (
        Fraction(server.free_quota - case.pool.quota, max(server.quota_capacity, 1))
        if case.pool is not None
        else Fraction(0)
    )
    if server.gpus:
        n = len(server.gpus)
        gpus = [g for g in case.gpus_of(server) if g is not None]
        memory = min(
            Fraction(n * g.free_bytes - adds(case, server), n * g.capacity_bytes) for g in gpus
        )
    else:
        memory = Fraction(server.free_bytes - adds(case, server), max(server.capacity_bytes, 1))
    return adds(case, server), quota, memory


def start_choice(case: Case, node: NodeView) -> list[GpuView] | None:
    """The GPUs a new server of the lease would take on `node`, or None where none fit."""
    want = case.want
    if not case.node_matches(node.name):
        return None
    fitting = sorted(
        (
            g
            for g in node.gpus
            if want.gpu_product in g.product and g.free_bytes * want.gpus >= case.need
        ),
        key=lambda g: g.free_bytes,
    )
    return fitting[: want.gpus] if len(fitting) >= want.gpus else None


def start_leftover(case: Case, gpus: Sequence[GpuView | None]) -> Fraction:
    n = case.want.gpus
    return sum(
        (Fraction(n * g.free_bytes - case.need, n * g.capacity_bytes) for g in gpus if g),
        Fraction(0),
    )


def one_liner(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text and "\r" not in text


# --- properties -----------------------------------------------------------------------------
#
# Properties about joining run over crowded fleets (where several servers are eligible at
# once), those about starting, rejecting and explaining over the plain ones (where starts,
# rejects and waits are common).


@PROPERTIES
@given(cases(crowded=True))
def test_a_joined_server_has_the_room(case: Case) -> None:
    """Memory (on a GPU server: the lease's share on each of its GPUs, all listed) and quota."""
    decision = case.decide()
    if not isinstance(decision, JoinServer):
        return
    server = case.server(decision.server_id)
    if case.pool is not None:
        assert server.free_quota >= case.pool.quota
    if server.gpus:
        for gpu in case.gpus_of(server):
            assert gpu is not None, f"{server.id} is on a GPU the nodes do not list"
            assert gpu.free_bytes * len(server.gpus) >= adds(case, server), gpu.label
    else:
        assert server.free_bytes >= adds(case, server)


@PROPERTIES
@given(cases())
def test_a_started_server_has_the_room(case: Case) -> None:
    """Below the server limit; on GPUs: N distinct GPUs of one matching node, of the product,
    each with the share free; on a CPU server: a lease no larger than a server."""
    decision = case.decide()
    if not isinstance(decision, StartServer):
        return
    want = case.want
    if case.pool is not None:
        running = sum(1 for s in case.servers if s.pool == case.pool.name)
        assert running < case.pool.max_servers
    else:
        assert sum(1 for s in case.servers if s.pool == "") < case.max_servers
    if decision.gpus:
        assert len(decision.gpus) == want.gpus
        assert len(set(decision.gpus)) == len(decision.gpus), "a GPU chosen twice"
        assert case.node(decision.node) is not None, f"no node {decision.node!r}"
        assert case.node_matches(decision.node)
        for index in decision.gpus:
            gpu = case.gpu(decision.node, index)
            assert gpu is not None, f"{decision.node} has no GPU {index}"
            assert gpu.free_bytes * want.gpus >= case.need, gpu.label
            assert want.gpu_product in gpu.product
    else:
        assert want.gpus == 0, "a GPU lease started on a CPU server"
        assert case.need <= (case.pool.server_memory if case.pool else case.server_capacity)


@PROPERTIES
@given(cases(crowded=True))
def test_framework_isolation(case: Case) -> None:
    decision = case.decide()
    group = lease_group(case.models)
    if group is None:
        assert isinstance(decision, Reject)
        assert "mixes frameworks" in decision.reason
    elif isinstance(decision, JoinServer):
        assert case.server(decision.server_id).framework_group == group
    elif isinstance(decision, StartServer):
        assert decision.framework_group == group


@PROPERTIES
@given(cases(crowded=True))
def test_one_server_for_all_models_and_no_name_clash(case: Case) -> None:
    decision = case.decide()
    assert isinstance(decision, JoinServer | StartServer | Wait | Reject)
    if isinstance(decision, JoinServer):
        server = case.server(decision.server_id)
        assert not conflicts(case, server), f"a model of the lease clashes on {server.id}"
        assert server.accepting
        if case.pool is not None:
            assert server.pool == case.pool.name
        else:
            assert (server.pool, server.binary) == ("", case.binary)


@PROPERTIES
@given(cases(crowded=True))
def test_constraints_are_honoured(case: Case) -> None:
    decision = case.decide()
    want = case.want
    if want.colocate_with:
        assert not isinstance(decision, StartServer), "colocate_with must never start a server"
    if isinstance(decision, JoinServer):
        server = case.server(decision.server_id)
        assert not want.exclusive, "an exclusive lease joined a server"
        assert not server.exclusive, "an exclusive server was joined"
        assert not want.avoid & server.tags
        if want.colocate_with:
            assert want.colocate_with & server.tags
        assert len(server.gpus) == want.gpus
        if want.gpus:
            assert case.node_matches(server.node)
            for gpu in case.gpus_of(server):
                assert gpu is not None and want.gpu_product in gpu.product
    elif isinstance(decision, StartServer) and decision.gpus:
        assert case.node_matches(decision.node)
        for index in decision.gpus:
            gpu = case.gpu(decision.node, index)
            assert gpu is not None and want.gpu_product in gpu.product


@PROPERTIES
@given(cases(crowded=True))
def test_best_fit_among_eligible_servers(case: Case) -> None:
    """Joins the server the lease fills most tightly on its tightest resource (pool: quota
    first); starts or waits only when no eligible server has room."""
    decision = case.decide()
    candidates = joinable(case)
    if isinstance(decision, JoinServer):
        chosen = case.server(decision.server_id)
        assert chosen in candidates
        assert leftover(case, chosen) == min(leftover(case, s) for s in candidates)
    elif isinstance(decision, StartServer | Wait):
        assert not candidates, f"{type(decision).__name__} while {candidates[0].id} has room"


@PROPERTIES
@given(cases(crowded=True, uniform=True))
def test_best_fit_leaves_the_least_memory_free_on_cpu_servers(case: Case) -> None:
    """Unpooled CPU leases, every CPU server of one capacity: the least added memory, then
    the smallest leftover wins."""
    decision = case.decide()
    if not isinstance(decision, JoinServer):
        return
    chosen = case.server(decision.server_id)

    def fill(server: ServerView) -> tuple[int, int]:
        return adds(case, server), server.free_bytes - adds(case, server)

    for other in joinable(case):
        assert fill(other) >= fill(chosen), other.id


@PROPERTIES
@given(cases())
def test_best_fit_for_a_new_gpu_server(case: Case) -> None:
    """On each matching node, the N GPUs of the product with the least free memory that still
    fit the share; of the nodes, the one whose choice leaves the least free."""
    decision = case.decide()
    if not isinstance(decision, StartServer) or not decision.gpus:
        return
    choices = {n.name: start_choice(case, n) for n in case.nodes}
    chosen = [case.gpu(decision.node, i) for i in decision.gpus]
    assert sorted(g.free_bytes for g in chosen if g) == [
        g.free_bytes for g in choices[decision.node] or ()
    ]
    assert start_leftover(case, chosen) == min(
        start_leftover(case, c) for c in choices.values() if c is not None
    )


@PROPERTIES
@given(cases())
def test_rejects_exactly_what_can_never_fit(case: Case) -> None:
    """Reject only a lease that mixes an isolated framework, or that no server could hold
    however empty the fleet (pool quota, server memory, GPUs on one matching node); never
    reject one that could fit."""
    decision = case.decide()
    hopeless = lease_group(case.models) is None or never_fits(case)
    assert isinstance(decision, Reject) == hopeless, decision


@PROPERTIES
@given(cases())
def test_reasons_are_one_line(case: Case) -> None:
    decision = case.decide()
    if isinstance(decision, Wait | Reject):
        assert one_liner(decision.reason), repr(decision.reason)
    if isinstance(decision, Wait) and case.want.gpus:
        assert any(
            word in decision.reason
            for word in ("GPU memory", "full", "beside", "servers are running")
        ), decision.reason
    if isinstance(decision, JoinServer | StartServer):
        assert one_liner(decision.why), repr(decision.why)


@PROPERTIES
@given(cases())
def test_deterministic_and_leaves_its_input_alone(case: Case) -> None:
    before = copy.deepcopy(case)
    first = case.decide()
    assert case == before, "place changed its input"
    assert case.decide() == first


@PROPERTIES
@given(cases(crowded=True, one_gpu_size=True))
def test_best_fit_among_eligible_servers_on_gpus_of_one_size(case: Case) -> None:
    """As above, where the index reads joins off its sorted lists."""
    test_best_fit_among_eligible_servers.hypothesis.inner_test(case)  # type: ignore[attr-defined]
    test_a_joined_server_has_the_room.hypothesis.inner_test(case)  # type: ignore[attr-defined]


@PROPERTIES
@given(cases(one_gpu_size=True))
def test_best_fit_for_a_new_gpu_server_on_gpus_of_one_size(case: Case) -> None:
    """As above, where the index reads a new one-GPU server off its sorted GPUs."""
    test_best_fit_for_a_new_gpu_server.hypothesis.inner_test(case)  # type: ignore[attr-defined]
    test_a_started_server_has_the_room.hypothesis.inner_test(case)  # type: ignore[attr-defined]
    test_rejects_exactly_what_can_never_fit.hypothesis.inner_test(case)  # type: ignore[attr-defined]


def kept_current(case: Case) -> FleetIndex:
    """The case's fleet as an owner builds it over time: nodes first with nothing used,
    servers put in a first version and then their own, a server that comes and goes, and the
    GPUs' use set last."""
    index = FleetIndex(
        nodes=[replace(n, gpus=tuple(replace(g, used_bytes=0) for g in n.gpus)) for n in case.nodes]
    )
    for server in case.servers:
        index.put_server(replace(server, used_bytes=0, models={}, tags=frozenset()))
        index.put_server(replace(server, id=ServerId(f"{server.id}-gone"), pool=""))
        index.put_server(server)
        index.drop_server(ServerId(f"{server.id}-gone"))
    for node in case.nodes:
        for gpu in node.gpus:
            index.set_gpu_used(node.name, gpu.index, gpu.capacity_bytes)
            index.set_gpu_used(node.name, gpu.index, gpu.used_bytes)
    return index


def decide_with(case: Case, index: FleetIndex) -> Decision:
    return place(
        list(case.models),
        server_capacity=case.server_capacity,
        max_servers=case.max_servers,
        binary=case.binary,
        pool=case.pool,
        constraints=case.want,
        isolated_frameworks=ISOLATED,
        index=index,
    )


@PROPERTIES
@given(st.one_of(cases(crowded=True, one_gpu_size=True), cases(one_gpu_size=True), cases()))
def test_an_index_kept_current_decides_as_one_built_at_once(case: Case) -> None:
    """The lease manager keeps one index for the fleet and changes it piece by piece; its
    decisions must be those of the fleet as it is, reasons included."""
    assert decide_with(case, kept_current(case)) == case.decide()


# --- examples --------------------------------------------------------------------------------

H100 = "NVIDIA H100 80GB"


def test_a_gpu_lease_joins_only_a_server_on_a_node_matching_its_selector() -> None:
    """The server on the unmatched node is the tighter fit, and still not taken."""
    nodes = [
        NodeView("n0", (GpuView("n0", 0, H100, 80 * GiB, 0),), {"zone": "a"}),
        NodeView("n1", (GpuView("n1", 0, H100, 80 * GiB, 60 * GiB),), {"zone": "b"}),
    ]
    servers = [
        ServerView(ServerId("s-b"), 0, 0, {}, node="n1", gpus=(0,)),
        ServerView(ServerId("s-a"), 0, 0, {}, node="n0", gpus=(0,)),
    ]
    decision = place(
        [ModelNeed("a", uri("a", 0), 4 * GiB, "python")],
        servers,
        server_capacity=16 * GiB,
        max_servers=4,
        constraints=Constraints(gpus=1, node_selector={"zone": "a"}),
        nodes=nodes,
        isolated_frameworks=ISOLATED,
    )
    assert decision == JoinServer(ServerId("s-a"), decision.why)


@pytest.mark.parametrize(
    ("node", "gpus", "listed"),
    [
        pytest.param("gone", (0,), (0,), id="node-left-the-view"),
        pytest.param("n0", (0, 1), (0, 2), id="one-gpu-unlisted"),
    ],
)
def test_a_gpu_server_on_gpus_the_nodes_do_not_list_is_not_joined(
    node: str, gpus: tuple[int, ...], listed: tuple[int, ...]
) -> None:
    """Neither the product nor the free memory of an unlisted GPU can be checked, so a lease
    that asks for H100s must not join a server on one (it may start one on n0 instead)."""
    nodes = [NodeView("n0", tuple(GpuView("n0", i, H100, 80 * GiB, 0) for i in listed))]
    server = ServerView(ServerId("s-1"), 16 * GiB, 0, {}, node=node, gpus=gpus)
    decision = place(
        [ModelNeed("a", uri("a", 0), 4 * GiB, "python")],
        [server],
        server_capacity=16 * GiB,
        max_servers=4,
        constraints=Constraints(gpus=len(gpus), gpu_product="H100"),
        nodes=nodes,
        isolated_frameworks=ISOLATED,
    )
    assert not isinstance(decision, JoinServer), decision


@pytest.mark.parametrize("live", [False, True], ids=["start", "join"])
def test_a_cpu_lease_lands_only_on_a_node_matching_its_selector(live: bool) -> None:
    nodes = [NodeView("n0", labels={"zone": "a"})]
    servers = [ServerView(ServerId("s-1"), 16 * GiB, 0, {}, node="n0")] if live else []
    decision = place(
        [ModelNeed("a", uri("a", 0), GiB, "python")],
        servers,
        server_capacity=16 * GiB,
        max_servers=4,
        constraints=Constraints(gpus=0, node_selector={"zone": "b"}),
        nodes=nodes,
        isolated_frameworks=ISOLATED,
    )
    # The only node does not match: nothing to join or start on.
    assert isinstance(decision, Wait | Reject), f"{decision} on n0 (zone=a), asked zone=b"


def test_a_lease_shares_a_model_the_server_holds_even_when_the_server_is_full() -> None:
    """Triton loads a model once, so a lease asking for a held model adds no memory: it joins
    the full server that holds it rather than starting a second copy elsewhere."""
    nodes = [
        NodeView(
            "n0",
            (GpuView("n0", 0, H100, 80 * GiB, 80 * GiB), GpuView("n0", 1, H100, 80 * GiB, 0)),
        )
    ]
    a = uri("a", 0)
    servers = [
        ServerView(
            ServerId("s-1"),
            80 * GiB,
            80 * GiB,
            {"a": a},
            node="n0",
            gpus=(0,),
            held={"a": (a, 30 * GiB)},
        )
    ]
    decision = place(
        [ModelNeed("a", a, 30 * GiB, "python")],
        servers,
        server_capacity=16 * GiB,
        max_servers=4,
        constraints=Constraints(gpus=1),
        nodes=nodes,
        isolated_frameworks=ISOLATED,
    )
    assert decision == JoinServer(ServerId("s-1"), decision.why)
    assert "shares 30.0 GiB" in decision.why
