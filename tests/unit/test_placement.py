"""Placement v0: best fit over live servers, all of a lease's models on one server."""

from __future__ import annotations

import random

import pytest

from tms_core.ids import ServerId
from tms_core.placement import (
    JoinServer,
    ModelNeed,
    Reject,
    ServerView,
    StartServer,
    Wait,
    place,
)

GiB = 1024**3
CAPACITY = 16 * GiB


def need(name: str, memory: int, uri: str | None = None) -> ModelNeed:
    return ModelNeed(name, uri or f"file:///models/{name}", memory)


def server(
    sid: str, used: int, models: dict[str, str] | None = None, *, accepting: bool = True
) -> ServerView:
    return ServerView(ServerId(sid), CAPACITY, used, models or {}, accepting)


def test_best_fit_picks_the_tightest_server_that_fits() -> None:
    servers = [
        server("s-roomy", used=2 * GiB),  # 14 GiB free
        server("s-tight", used=12 * GiB),  # 4 GiB free: the tightest that fits 3 GiB
        server("s-full", used=14 * GiB),  # 2 GiB free: too little
        server("s-mid", used=8 * GiB),  # 8 GiB free
    ]
    decision = place(
        [need("a", 2 * GiB), need("b", GiB)], servers, server_capacity=CAPACITY, max_servers=8
    )
    assert isinstance(decision, JoinServer)
    assert decision.server_id == "s-tight"
    assert "4.0 GiB free on s-tight" in decision.why
    assert "needs 3.0 GiB" in decision.why


def test_an_exact_fit_is_chosen() -> None:
    decision = place(
        [need("a", 4 * GiB)],
        [server("s-1", used=0), server("s-2", used=12 * GiB)],
        server_capacity=CAPACITY,
        max_servers=8,
    )
    assert isinstance(decision, JoinServer)
    assert decision.server_id == "s-2"


def test_skips_a_server_holding_a_different_model_of_the_same_name() -> None:
    servers = [
        # Tightest, but its "resnet" is another model: Triton names are unique per server.
        server("s-other", used=12 * GiB, models={"resnet": "file:///elsewhere/resnet"}),
        server("s-free", used=4 * GiB, models={"bert": "file:///models/bert"}),
    ]
    decision = place([need("resnet", GiB)], servers, server_capacity=CAPACITY, max_servers=8)
    assert isinstance(decision, JoinServer)
    assert decision.server_id == "s-free"


def test_joins_a_server_holding_the_same_model() -> None:
    servers = [
        server("s-roomy", used=0),
        server("s-same", used=8 * GiB, models={"resnet": "file:///models/resnet"}),
    ]
    decision = place([need("resnet", GiB)], servers, server_capacity=CAPACITY, max_servers=8)
    assert isinstance(decision, JoinServer)
    assert decision.server_id == "s-same"


def test_only_name_conflicts_start_a_new_server() -> None:
    servers = [server("s-1", used=0, models={"resnet": "file:///elsewhere/resnet"})]
    decision = place([need("resnet", GiB)], servers, server_capacity=CAPACITY, max_servers=8)
    assert isinstance(decision, StartServer)


def test_servers_not_accepting_are_skipped() -> None:
    servers = [server("s-closed", used=0, accepting=False), server("s-open", used=15 * GiB)]
    decision = place([need("a", GiB)], servers, server_capacity=CAPACITY, max_servers=8)
    assert isinstance(decision, JoinServer)
    assert decision.server_id == "s-open"


def test_starts_a_server_when_none_fits_and_below_max() -> None:
    servers = [server("s-1", used=15 * GiB), server("s-2", used=14 * GiB)]
    decision = place([need("a", 4 * GiB)], servers, server_capacity=CAPACITY, max_servers=3)
    assert isinstance(decision, StartServer)
    assert "4.0 GiB" in decision.why


def test_starts_the_first_server_of_an_empty_fleet() -> None:
    decision = place([need("a", GiB)], [], server_capacity=CAPACITY, max_servers=1)
    assert isinstance(decision, StartServer)


def test_waits_at_max_servers_naming_needed_and_largest_free() -> None:
    servers = [server("s-1", used=15 * GiB), server("s-2", used=13 * GiB)]
    decision = place([need("a", 4 * GiB)], servers, server_capacity=CAPACITY, max_servers=2)
    assert isinstance(decision, Wait)
    assert "needs 4.0 GiB" in decision.reason
    assert "largest free is 3.0 GiB" in decision.reason
    assert "all 2 servers are running" in decision.reason


def test_largest_free_ignores_servers_the_lease_cannot_join() -> None:
    servers = [
        server("s-conflict", used=0, models={"a": "file:///elsewhere/a"}),
        server("s-1", used=15 * GiB),
    ]
    decision = place([need("a", 4 * GiB)], servers, server_capacity=CAPACITY, max_servers=2)
    assert isinstance(decision, Wait)
    assert "largest free is 1.0 GiB" in decision.reason


def test_rejects_a_lease_larger_than_a_whole_server() -> None:
    decision = place(
        [need("a", 10 * GiB), need("b", 7 * GiB)], [], server_capacity=CAPACITY, max_servers=8
    )
    assert isinstance(decision, Reject)
    assert "needs 17.0 GiB" in decision.reason
    assert "a server offers 16.0 GiB" in decision.reason


def test_a_lease_exactly_the_size_of_a_server_is_not_rejected() -> None:
    decision = place([need("a", CAPACITY)], [], server_capacity=CAPACITY, max_servers=1)
    assert isinstance(decision, StartServer)


def test_undeclared_memory_joins_even_a_full_server() -> None:
    decision = place(
        [need("a", 0)], [server("s-full", used=CAPACITY)], server_capacity=CAPACITY, max_servers=1
    )
    assert isinstance(decision, JoinServer)


NAMES = ["a", "b", "c", "d", "e"]
URIS = ["file:///m1/{}", "file:///m2/{}"]


def _random_case(rng: random.Random) -> tuple[list[ModelNeed], list[ServerView], int]:
    count = rng.randint(0, 6)
    servers = []
    for i in range(count):
        models = {
            name: rng.choice(URIS).format(name) for name in rng.sample(NAMES, rng.randint(0, 3))
        }
        servers.append(
            ServerView(
                ServerId(f"s-{i}"),
                CAPACITY,
                rng.randrange(0, CAPACITY + 1, GiB // 4),
                models,
                accepting=rng.random() > 0.1,
            )
        )
    needs = [
        ModelNeed(name, rng.choice(URIS).format(name), rng.randrange(0, 7 * GiB, GiB // 8))
        for name in rng.sample(NAMES, rng.randint(1, 3))
    ]
    return needs, servers, rng.randint(1, 7)


@pytest.mark.parametrize("seed", range(400))
def test_placement_properties(seed: int) -> None:
    rng = random.Random(seed)
    models, servers, max_servers = _random_case(rng)
    total = sum(m.memory_bytes for m in models)
    decision = place(models, servers, server_capacity=CAPACITY, max_servers=max_servers)

    def compatible(s: ServerView) -> bool:
        return s.accepting and all(s.models.get(m.name, m.uri) == m.uri for m in models)

    fitting = [s for s in servers if compatible(s) and s.free_bytes >= total]
    if total > CAPACITY:
        assert isinstance(decision, Reject)
    elif fitting:
        assert isinstance(decision, JoinServer)
        chosen = next(s for s in servers if s.id == decision.server_id)
        assert chosen.accepting
        assert chosen.free_bytes >= total
        for m in models:
            assert chosen.models.get(m.name, m.uri) == m.uri, f"{m.name} conflicts on {chosen.id}"
        assert chosen.free_bytes == min(s.free_bytes for s in fitting)
    elif len(servers) < max_servers:
        assert isinstance(decision, StartServer)
    else:
        assert isinstance(decision, Wait)
