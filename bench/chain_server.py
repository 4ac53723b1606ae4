"""The chain process's cost: one request and one transaction through `alphintra chain serve`,
against the same on the in-process embedded chain (the baseline, measured in the same run).

    .venv/bin/python bench/chain_server.py [--requests 300] [--transfers 100]

1. Starts `alphintra chain serve` on a temporary state file (the first start deploys the demo
   world: printed, not counted) and an in-process embedded chain.
2. Times `--requests` eth_blockNumber and eth_getBalance reads, and `--transfers` signed ETH
   transfers (send and receipt: each is a block, fsynced to the state file before the answer),
   on both; prints p50/p99 in ms and the served/in-process ratio.
3. Restarts the chain process and prints how long it takes to answer again and the state
   file's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.defi.chain import EMBEDDED_CHAIN_ID, Chains
from gateway.settings import Settings


def start(state: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "chain", "serve", "--port", str(port),
                             "--state", str(state)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - began
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - began > 120:
            raise RuntimeError("the chain process did not start")
        time.sleep(0.05)


def timed(n: int, call: Callable[[], Any]) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        out.append((time.perf_counter() - began) * 1000)
    return out


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] if len(samples) > 1 else samples[0]


def run(w3: Any, requests: int, transfers: int) -> dict[str, list[float]]:
    sender = w3.eth.account.create()
    faucet = w3.eth.accounts[0]
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
        {"from": faucet, "to": sender.address, "value": 10**21}))
    nonce = [w3.eth.get_transaction_count(sender.address)]

    def transfer() -> None:
        signed = sender.sign_transaction({
            "to": faucet, "value": 1, "gas": 21000, "nonce": nonce[0], "chainId": EMBEDDED_CHAIN_ID,
            "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
        nonce[0] += 1
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))

    return {"eth_blockNumber": timed(requests, lambda: w3.eth.block_number),
            "eth_getBalance": timed(requests, lambda: w3.eth.get_balance(faucet)),
            "signed transfer + receipt": timed(transfers, transfer)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--transfers", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state, port = Path(tmp) / "chain.state", _free_port()
        proc, first = start(state, port)
        try:
            print(f"first start (deploys the demo world): {first:.1f} s")
            url = f"http://127.0.0.1:{port}"
            served = run(Chains.from_settings(Settings(defi_chain_url=url)).get("embedded").web3,
                         args.requests, args.transfers)
            local = run(Chains.from_settings(Settings()).get("embedded").web3,
                        args.requests, args.transfers)
        finally:
            proc.terminate()
            proc.wait(30)
        print(f"{'':28} {'served p50':>11} {'p99':>8} {'in-process p50':>15} {'p99':>8} {'ratio p50':>10}")
        for name in served:
            s50, s99, l50, l99 = (pct(served[name], 50), pct(served[name], 99),
                                  pct(local[name], 50), pct(local[name], 99))
            print(f"{name:28} {s50:>9.2f}ms {s99:>6.2f}ms {l50:>13.2f}ms {l99:>6.2f}ms "
                  f"{s50 / l50:>9.1f}x")
        proc, again = start(state, port)
        proc.terminate()
        proc.wait(30)
        print(f"restart to first answer: {again:.1f} s; state file {state.stat().st_size / 1e6:.2f} MB")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
