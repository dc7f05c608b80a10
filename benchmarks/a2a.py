"""A2A benchmark: registering from a card, calling through the registry's a2a-sdk client, the card listing.

Run with ``python -m benchmarks.a2a [--consul-addr URL] [--iterations N] [--cards N]``. Without an address
it starts its own single Consul server with its state on disk (``dev_mode=False``: registrations are Raft
writes as in production, which a ``-dev`` agent keeps in memory). It starts the example agent
(examples/a2a/echo_agent.py, a real a2a-sdk server under uvicorn) and times, alternately in the same run so
that machine noise hits both sides alike, recording the load average around each section:

* ``register_card``: ``AgentRegistration.from_agent_card`` of the agent's card plus ``register_agent``
  (validation, the card in KV, the service) against a plain registration of the same agent, both
  re-registering one id (what a sidecar does when it starts again, or re-registers a changed agent);
* ``register_card_new``: the same for a new id each round (deregistered after, untimed): the first
  registration, which stores the card;
* ``select_send``: ``a2a_client(registry, criteria).send_message`` (select by skill from the cache, the
  registered card's client, the lease's bookkeeping) against ``send_message`` of an a2a-sdk client built once
  for the agent's known card, same agent, one message each;
* ``card_listing``: ``agent_cards`` of ``--cards`` (default 1,000) card agents of one type, answered from
  the cache (discovery from memory, cards by digest), against a cached ``discover_agents`` of them;

and writes reports/bench-a2a.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.helpers import new_text_message
from a2a.types import Role, SendMessageRequest

from benchmarks._stats import (
    benchmark_parser,
    compare,
    consul_address,
    print_comparison,
    summary,
    write_report,
)
from consul_agents import AgentRegistration, AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents.a2a import a2a_client

REPORT = Path("reports/bench-a2a.json")
AGENT = Path(__file__).parents[1] / "examples" / "a2a" / "echo_agent.py"
CARDS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_agent() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(AGENT), str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/.well-known/agent-card.json", timeout=2):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the example agent did not start") from None
            time.sleep(0.1)


def _card(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/.well-known/agent-card.json", timeout=5) as response:
        card: dict[str, Any] = json.loads(response.read())
    return card


def _load() -> float:
    return round(os.getloadavg()[0], 2)


async def _section(results: dict[str, Any], name: str, timed: Any) -> None:
    """``results[name]``: the comparison ``timed`` gives, with the 1-minute load average before and after."""
    before = _load()
    row = await timed
    row["load_average_1m"] = [before, _load()]
    results[name] = row
    print(f"{name}: ratio {row['ratio_median']} at the median (load {before} -> {_load()})", flush=True)


async def _compare_first_registrations(
    registry: AgentRegistry, card: dict[str, Any], url: str, iterations: int
) -> dict[str, Any]:
    """A new id each round for both sides, alternately; each agent deregistered after, outside the timing."""
    ours_s: list[float] = []
    bare_s: list[float] = []

    async def card_agent(i: int) -> str:
        return await registry.register_agent(
            AgentRegistration.from_agent_card(card, agent_type="bench-new-card", agent_id=f"nc-{i}", ttl=3600)
        )

    async def plain_agent(i: int) -> str:
        return await registry.register_agent(
            AgentRegistration(
                agent_type="bench-new-plain",
                agent_id=f"np-{i}",
                capabilities=["echo"],
                endpoint=url,
                ttl=3600,
            )
        )

    for i in range(-20, iterations):
        pairs = ((card_agent, ours_s), (plain_agent, bare_s))
        for register, sink in pairs if i % 2 == 0 else pairs[::-1]:
            started = time.perf_counter()
            agent_id = await register(i)
            if i >= 0:
                sink.append(time.perf_counter() - started)
            await registry.deregister_agent(agent_id)
    ours, bare = summary(ours_s), summary(bare_s)
    return {
        "ours": ours,
        "bare": bare,
        "ratio_median": round(ours["median_ms"] / bare["median_ms"], 3),
        "ratio_p99": round(ours["p99_ms"] / bare["p99_ms"], 3),
    }


def _message() -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message("ping", role=Role.ROLE_USER))


async def run(addr: str, iterations: int, cards: int = CARDS) -> dict[str, Any]:
    results: dict[str, Any] = {}
    proc, url = _start_agent()
    try:
        card = _card(url)
        async with AgentRegistry(addr) as registry:

            async def from_card(i: int) -> None:
                registration = AgentRegistration.from_agent_card(
                    card, agent_type="bench-card", agent_id="card-1", ttl=3600
                )
                await registry.register_agent(registration)

            async def plain(i: int) -> None:
                registration = AgentRegistration(
                    agent_type="bench-plain",
                    agent_id="plain-1",
                    capabilities=["echo"],
                    endpoint=url,
                    ttl=3600,
                )
                await registry.register_agent(registration)

            await _section(results, "register_card", compare(from_card, plain, iterations))
            await _section(
                results, "register_card_new", _compare_first_registrations(registry, card, url, iterations)
            )
            await registry.deregister_agent("plain-1")
            await registry.heartbeat("card-1")  # passing, however long the timing above took

            criteria = SelectionCriteria(agent_type="bench-card", capabilities=["echo"])
            config = ClientConfig(streaming=False)
            direct = ClientFactory(config).create(parse_agent_card(dict(card)))
            async with a2a_client(registry, criteria) as through:

                async def via_registry(i: int) -> None:
                    async for _ in through.send_message(_message()):
                        pass

                async def known_url(i: int) -> None:
                    async for _ in direct.send_message(_message()):
                        pass

                await _section(results, "select_send", compare(via_registry, known_url, iterations))
            await direct.close()
            await registry.deregister_agent("card-1")

            for i in range(cards):
                await registry.register_agent(
                    AgentRegistration.from_agent_card(
                        {**card, "name": f"echo {i}"},
                        agent_type="bench-cards",
                        agent_id=f"cards-{i}",
                        ttl=3600,
                    )
                )
            request = DiscoveryRequest(agent_type="bench-cards")
            assert len(await registry.agent_cards(request)) == cards  # warms the watch and the card cache

            async def listing(i: int) -> None:
                await registry.agent_cards(request)

            async def discovery(i: int) -> None:
                await registry.discover_agents(request)

            await _section(
                results, f"card_listing_{cards}", compare(listing, discovery, max(50, iterations // 3))
            )
            for i in range(cards):
                await registry.deregister_agent(f"cards-{i}")
    finally:
        proc.kill()
        proc.wait()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT)
    parser.add_argument("--cards", type=int, default=CARDS)
    args = parser.parse_args(argv)
    with consul_address(args.consul_addr, dev_mode=False) as addr:
        results = asyncio.run(run(addr, args.iterations, args.cards))
    write_report(
        args.output,
        results,
        consul=args.consul_addr or "single server (dev_mode=False, state on disk) started by the benchmark",
        iterations=args.iterations,
        command=f"python -m benchmarks.a2a --iterations {args.iterations} --cards {args.cards}",
        note="register_card: from a card vs plain, re-registering one id; register_card_new: a new id each "
        "round; select_send: registry's a2a client vs a2a-sdk to a known URL; card_listing: cached "
        "agent_cards vs cached discover_agents; load_average_1m: before and after each section",
    )
    print_comparison(results, "ours", "base")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
