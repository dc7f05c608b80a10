"""Security benchmark: what ACL tokens and TLS cost the registry, and what provisioning costs.

Run with ``make bench`` (or ``python -m benchmarks.security [--iterations N]``). It starts its own Consul
with ACLs on (config/consul-acl.json) and an HTTPS port whose certificate it generates with openssl, then
times, alternately in the same run so that machine noise hits both sides alike:

* ``acl_filter_discover_100``: discovering 100 agents with a discoverer token scoped to their type (Consul
  evaluates the policy per entry) against the management token (no filtering);
* ``https_discover_10`` / ``https_heartbeat``: the same call over HTTPS against plain HTTP, one reused
  connection each (the TLS handshake is paid once, as by a long-lived client);
* ``provision_noop``: ``acl setup`` of config/acl.yaml when everything is in place (reads only);

and writes reports/bench-security.json.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._stats import benchmark_parser, compare, print_results, summary, write_report
from consul_agents import AgentRegistration, AgentRegistry, ConsulSettings, DiscoveryRequest
from consul_agents._gateway import ConsulGateway
from consul_agents.acl import load_config, provision
from consul_agents.dev import ConsulDevServer

REPORT = Path("reports/bench-security.json")
CONFIG = Path("config")


def _pki(folder: Path) -> dict[str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it (EC P-256), made with the openssl command."""
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    steps = [
        ["req", "-x509", *curve, "-days", "1", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.pem",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *curve, "-subj", "/CN=server.dc1.consul", "-keyout", "server.key", "-out", "server.csr"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "1", "-extfile", "san.cnf", "-out", "server.pem"],
    ]  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for step in steps:
        subprocess.run(["openssl", *step], cwd=folder, check=True, capture_output=True, timeout=30)
    return {name: str(folder / f"{name}.pem") for name in ("ca", "server")} | {
        "key": str(folder / "server.key")
    }


def _registration(agent_type: str, i: int) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        agent_id=f"{agent_type}-{i}",
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{10000 + i}",
        ttl=3600,
    )


def _relabel(result: dict[str, Any], secure: str, baseline: str) -> dict[str, Any]:
    return {
        secure: result["ours"],
        baseline: result["bare"],
        "ratio_median": result["ratio_median"],
        "ratio_p99": result["ratio_p99"],
    }


async def run(server: ConsulDevServer, master: str, ca: str, iterations: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    https = server.https_addr
    assert https is not None
    config = load_config(CONFIG / "acl.yaml")
    async with ConsulGateway(ConsulSettings.resolve(server.http_addr, master, env={})) as gw:
        started = time.perf_counter()
        tokens = {t.name: t.secret_id for t in await provision(gw, config)}
        results["provision_first_run_ms"] = round((time.perf_counter() - started) * 1000, 2)
        results["provisioned_tokens"] = len(tokens)
        noop: list[float] = []
        for _ in range(max(10, iterations // 10)):
            started = time.perf_counter()
            await provision(gw, config)
            noop.append(time.perf_counter() - started)
        results["provision_noop"] = summary(noop)

    async with AgentRegistry(server.http_addr, tokens["planner-registrar"]) as registrar:
        await asyncio.gather(*(registrar.register_agent(_registration("planner", i)) for i in range(100)))
        async with (
            AgentRegistry(server.http_addr, tokens["planner-discoverer"], cache=False) as scoped,
            AgentRegistry(server.http_addr, master, cache=False) as management,
        ):
            request = DiscoveryRequest(agent_type="planner")
            assert len(await scoped.discover_agents(request)) == 100

            async def scoped_discover(_: int) -> None:
                await scoped.discover_agents(request)

            async def management_discover(_: int) -> None:
                await management.discover_agents(request)

            compared = await compare(scoped_discover, management_discover, iterations)
            results["acl_filter_discover_100"] = _relabel(compared, "scoped_token", "management_token")

        reader, writer = tokens["planner-discoverer"], tokens["planner-registrar"]
        async with (
            AgentRegistry(https, reader, ca_cert=ca, cache=False) as reader_tls,
            AgentRegistry(server.http_addr, reader, cache=False) as reader_plain,
            AgentRegistry(https, writer, ca_cert=ca) as writer_tls,
        ):
            request = DiscoveryRequest(agent_type="planner", capabilities=["plan"], max_load=0.5)
            assert len(await reader_tls.discover_agents(request)) == 100

            async def discover_tls(_: int) -> None:
                await reader_tls.discover_agents(request)

            async def discover_plain(_: int) -> None:
                await reader_plain.discover_agents(request)

            async def heartbeat_tls(_: int) -> None:
                await writer_tls.heartbeat("planner-0")

            async def heartbeat_plain(_: int) -> None:
                await registrar.heartbeat("planner-0")

            compared = await compare(discover_tls, discover_plain, iterations)
            results["https_discover_100"] = _relabel(compared, "https", "http")
            compared = await compare(heartbeat_tls, heartbeat_plain, iterations)
            results["https_heartbeat"] = _relabel(compared, "https", "http")
        for i in range(100):
            await registrar.deregister_agent(f"planner-{i}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, consul_addr=False, iterations=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pki-") as folder:
        pki = _pki(Path(folder))
        acl = json.loads((CONFIG / "consul-acl.json").read_text())
        master = str(uuid.uuid4())
        acl["acl"]["tokens"] = {"master": master, "agent": master}
        tls = {"cert_file": pki["server"], "key_file": pki["key"], "ca_file": pki["ca"]}
        # as deployed (state on disk): the heartbeat rows cost what a TLS heartbeat costs there
        with ConsulDevServer(https=True, dev_mode=False, extra_config={**acl, **tls}) as server:
            server.wait_settled()
            results = asyncio.run(run(server, master, pki["ca"], args.iterations))
    write_report(
        args.output,
        results,
        consul="single server (state on disk) with ACLs (default deny) and HTTPS, started by the benchmark",
        iterations=args.iterations,
    )
    print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
