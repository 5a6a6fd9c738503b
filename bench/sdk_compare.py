"""piper-mcp's client against the published SDK (pyper-sdk 0.4.4, protocol v1), side by side.

Both talk to the same `piper-mcp local serve` over TLS, each from its own
process, A B A B: 200 sequential `get_secret` calls over 5 variables, then 50
concurrent ones (threads for the SDK, tasks for piper-mcp). Wall time of the
calls only; medians over the rounds.

    python -m bench.sdk_compare [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trustme

from bench import BENCH_SECRET
from piper_mcp.local.vault import Vault

CACHE = Path(__file__).parent / ".cache"
SDK_VERSION = "0.4.4"
VARIABLES = [f"variable_{n}" for n in range(5)]

SDK_WORKER = """
import json, logging, os, sys, time
from concurrent.futures import ThreadPoolExecutor
logging.disable(logging.CRITICAL)
from piper_sdk.client import PiperClient
e = os.environ
client = PiperClient(e["PIPER_CLIENT_ID"], e["PIPER_CLIENT_SECRET"], token_url=e["PIPER_TOKEN_URL"],
    resolve_mapping_url=e["PIPER_RESOLVE_MAPPING_URL"], get_scoped_url=e["PIPER_GET_SCOPED_URL"],
    exchange_secret_url=e["PIPER_EXCHANGE_SECRET_URL"], piper_link_service_url=e["PIPER_LINK_URL"],
    enable_env_fallback=False)
names = json.loads(e["BENCH_VARIABLES"])
client.get_secret(names[0])  # warm: agent tokens, connections
start = time.perf_counter()
for n in range(200):
    assert client.get_secret(names[n % 5])["source"] == "piper_sts"
sequential = time.perf_counter() - start
start = time.perf_counter()
with ThreadPoolExecutor(50) as pool:
    list(pool.map(lambda n: client.get_secret(names[n % 5]), range(50)))
concurrent = time.perf_counter() - start
print(json.dumps({"sequential_s": sequential, "concurrent_s": concurrent}))
"""

OUR_WORKER = """
import asyncio, json, os, time
from piper_mcp.piper import AsyncPiperClient
e = os.environ
names = json.loads(e["BENCH_VARIABLES"])
async def main():
    async with AsyncPiperClient.from_settings() as client:
        await client.get_secret(names[0])
        start = time.perf_counter()
        for n in range(200):
            assert (await client.get_secret(names[n % 5]))["source"] == "piper_sts"
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        await asyncio.gather(*(client.get_secret(names[n % 5]) for n in range(50)))
        concurrent = time.perf_counter() - start
    print(json.dumps({"sequential_s": sequential, "concurrent_s": concurrent}))
asyncio.run(main())
"""


def sdk_path() -> Path:
    target = CACHE / f"pyper-sdk-{SDK_VERSION}"
    if not (target / "piper_sdk").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
                str(target),
                f"pyper-sdk=={SDK_VERSION}",
            ],
            check=True,
        )
    return target


def run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        home = Path(folder) / "vault"
        vault, _ = Vault.init(home)
        me = vault.local_user_id
        vault.add_agent("bench-agent", BENCH_SECRET, owner_user_id=me, variables=VARIABLES)
        for name in VARIABLES:
            vault.put_secret(f"secret {name}", "x" * 40, owner_user_id=me)
            vault.grant(me, "bench-agent", name, f"secret {name}")
        vault.close()
        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        cert, key, ca = (Path(folder) / n for n in ("cert.pem", "key.pem", "ca.pem"))
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        authority.cert_pem.write_to_path(str(ca))
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piper_mcp",
                "local",
                "serve",
                "--port",
                "0",
                "--link-port",
                "0",
                "--json",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            env={**os.environ, "PIPER_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert serve.stdout is not None
            env = {
                **os.environ,
                **json.loads(serve.stdout.readline())["env"],
                "PIPER_CLIENT_ID": "bench-agent",
                "PIPER_CLIENT_SECRET": BENCH_SECRET,
                "PIPER_CA_BUNDLE": str(ca),
                "REQUESTS_CA_BUNDLE": str(ca),
                "PIPER_ENV_FALLBACK": "false",
                "BENCH_VARIABLES": json.dumps(VARIABLES),
            }
            workers = {
                f"pyper-sdk {SDK_VERSION}": (SDK_WORKER, {**env, "PYTHONPATH": str(sdk_path())}),
                "piper-mcp client": (OUR_WORKER, {**env, "PIPER_REVOCATION_WINDOW": "30"}),
                # Every call a Piper round trip: the protocol work alone, no token reuse.
                "piper-mcp client, no reuse": (
                    OUR_WORKER,
                    {**env, "PIPER_REVOCATION_WINDOW": "0"},
                ),
            }
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in workers}
            for _ in range(rounds):
                for name, (code, worker_env) in workers.items():  # A B A B
                    done = subprocess.run(
                        [sys.executable, "-c", code],
                        env=worker_env,
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=600,
                    )
                    samples[name].append(json.loads(done.stdout))
        finally:
            serve.terminate()
            serve.wait(timeout=20)
    medians = {
        name: {key: round(statistics.median(s[key] for s in runs), 3) for key in runs[0]}
        for name, runs in samples.items()
    }
    sdk = medians[f"pyper-sdk {SDK_VERSION}"]
    for name in ("piper-mcp client", "piper-mcp client, no reuse"):
        medians[f"speedup, {name}"] = {key: round(sdk[key] / medians[name][key], 1) for key in sdk}
    return medians


def table(results: dict[str, Any]) -> str:
    sdk = results[f"pyper-sdk {SDK_VERSION}"]
    ours, bare = results["piper-mcp client"], results["piper-mcp client, no reuse"]
    fast = results["speedup, piper-mcp client"]
    slow = results["speedup, piper-mcp client, no reuse"]
    lines = [
        f"| workload (local TLS backend) | pyper-sdk {SDK_VERSION} | piper-mcp client "
        "| speed-up (target) | piper-mcp, window 0 | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, target in (
        ("sequential_s", "200 sequential get_secret, 5 variables (s)", "≥ 3x"),
        ("concurrent_s", "50 concurrent get_secret, 5 variables (s)", "≥ 5x"),
    ):
        lines.append(
            f"| {label} | {sdk[key]} | {ours[key]} | {fast[key]}x ({target}) | "
            f"{bare[key]} | {slow[key]}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(table(run(args.rounds)))


if __name__ == "__main__":
    main()
