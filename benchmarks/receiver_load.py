"""Signed webhooks per second through one receiver, beside a bare aiohttp endpoint.

    .venv/bin/python benchmarks/receiver_load.py --output docs/benchmarks.md

The load comes from vegeta (github.com/tsenart/vegeta), which the script
installs with ``go install`` into var/tools/ when it is not on the PATH.

1. Simulated bodies (``engagement simulate``'s generator) are signed and
   written as vegeta targets, the same set for both endpoints.
2. A bare aiohttp endpoint (benchmarks/bare_endpoint.py: read the body, answer
   200) is loaded as fast as ``--connections`` workers go: the ceiling.
3. The receiver (``engagement receiver``, forwarding to a fresh topic of the
   broker, answering once the broker acknowledged) is loaded the same way.
4. The receiver again, at a fixed rate of half the bare endpoint's, for its
   latency when not saturated.

Results are printed as a table and, with --output, appended to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import publish  # noqa: E402
from engagement.kafka import delete_topics  # noqa: E402
from engagement.processes import Service, free_port, start_service  # noqa: E402
from engagement.runtime import broker_for  # noqa: E402
from engagement.settings import Settings  # noqa: E402
from producers.signature import sign  # noqa: E402
from producers.simulate import Scale, simulate  # noqa: E402

VEGETA = "github.com/tsenart/vegeta/v12@v12.13.0"
TOOLS = ROOT / "var" / "tools"


def vegeta() -> str:
    found = shutil.which("vegeta") or shutil.which("vegeta", path=str(TOOLS))
    if found:
        return found
    go = shutil.which("go")
    if go is None:
        sys.exit("This benchmark needs vegeta, or Go to install it: see its docstring")
    print(f"Installing vegeta into {TOOLS} (go install {VEGETA})")
    subprocess.run(
        [go, "install", VEGETA], check=True, env={**os.environ, "GOBIN": str(TOOLS)}
    )
    return str(TOOLS / "vegeta")


def write_targets(path: Path, url: str, bodies: list[bytes], secret: str) -> None:
    with path.open("wb") as out:
        for body in bodies:
            target = {
                "method": "POST",
                "url": url,
                "body": base64.b64encode(body).decode(),
                "header": {
                    "content-type": ["application/json"],
                    "x-signature": [sign(body, secret)],
                },
            }
            out.write(orjson.dumps(target) + b"\n")


def attack(
    tool: str, targets: Path, seconds: float, connections: int, rate: int
) -> dict:
    """Run vegeta; rate 0 means as fast as ``connections`` workers go."""
    workers = ["-max-workers", str(connections)] if rate == 0 else []
    attack_run = subprocess.run(
        [
            tool,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-duration={seconds}s",
            f"-rate={rate}/s",
            f"-workers={connections}",
            *workers,
        ],
        check=True,
        capture_output=True,
    )
    report = subprocess.run(
        [tool, "report", "-type=json"],
        input=attack_run.stdout,
        check=True,
        capture_output=True,
    )
    return json.loads(report.stdout)


def summary(report: dict) -> dict:
    latencies = report["latencies"]
    return {
        "requests/s": report["throughput"],
        "p50 ms": latencies["50th"] / 1e6,
        "p99 ms": latencies["99th"] / 1e6,
        "success": report["success"],
        "codes": report["status_codes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--output", type=Path, help="append the results here")
    args = parser.parse_args()
    tool = vegeta()

    bodies = [
        orjson.dumps(body)
        for body in simulate(Scale(schools=4, students_per_school=150, days=10))
    ]
    run = f"bench-{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    secret = secrets.token_hex(16)
    results: dict[str, dict] = {}
    services: list[Service] = []
    bare: subprocess.Popen | None = None
    with broker_for(Settings()) as bootstrap:
        try:
            bare_port = free_port()
            bare = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "bare_endpoint.py"),
                    "--port",
                    str(bare_port),
                ]
            )
            port = free_port()
            receiver = start_service(
                "receiver",
                "receiver",
                {
                    "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "ENGAGEMENT_KAFKA_TOPIC": f"{run}.alpaclass.webhooks",
                    "ENGAGEMENT_WEBHOOK_SECRETS": secret,
                    "ENGAGEMENT_RECEIVER_PORT": str(port),
                    "ENGAGEMENT_RECEIVER_SPOOL_PATH": str(workdir / "spool.sqlite3"),
                },
                f"http://127.0.0.1:{port}/health",
                workdir / "receiver.log",
            )
            services.append(receiver)
            receiver.wait_healthy(60)
            time.sleep(2)  # the bare endpoint starts faster than the receiver

            bare_targets = workdir / "bare.json"
            receiver_targets = workdir / "receiver.json"
            write_targets(
                bare_targets,
                f"http://127.0.0.1:{bare_port}/webhooks/eduzz",
                bodies,
                secret,
            )
            write_targets(
                receiver_targets,
                f"http://127.0.0.1:{port}/webhooks/eduzz",
                bodies,
                secret,
            )
            for name, targets in (
                ("bare", bare_targets),
                ("receiver", receiver_targets),
            ):
                attack(tool, targets, 3, args.connections, 0)  # warm up
                results[name] = summary(
                    attack(tool, targets, args.seconds, args.connections, 0)
                )
                print(name, results[name])
            half = int(results["bare"]["requests/s"] / 2)
            results[f"receiver at {half:,}/s"] = summary(
                attack(tool, receiver_targets, args.seconds, args.connections, half)
            )
            print(results)
        finally:
            for service in services:
                service.stop()
            if bare is not None:
                bare.terminate()
                bare.wait(10)
            asyncio.run(delete_topics(bootstrap, [run]))
            shutil.rmtree(workdir, ignore_errors=True)

    ceiling = results["bare"]["requests/s"]
    rows = [
        [
            name,
            f"{result['requests/s']:,.0f}",
            f"{result['requests/s'] / ceiling:.2f}×",
            f"{result['p50 ms']:.1f}",
            f"{result['p99 ms']:.1f}",
            ", ".join(f"{n:,}× {code}" for code, n in result["codes"].items()),
        ]
        for name, result in results.items()
    ]
    publish(
        f"{len(bodies):,} signed bodies, {args.connections} connections, "
        f"{args.seconds:g} s each",
        ["endpoint", "requests/s", "÷ bare", "p50 ms", "p99 ms", "answers"],
        rows,
        args.output,
        numeric=[False, True, True, True, True, False],
    )


if __name__ == "__main__":
    main()
