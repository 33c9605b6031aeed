"""Notifications/s through one push adapter (APNs, FCM) to its local stand-in, loopback only.

Run: .venv/bin/python bench/push_providers.py [seconds per provider] [concurrency] [providers]
(defaults 5, 200, apns,fcm). The stand-in (tests/fakes: hypercorn, HTTP/2 over TLS with a self-signed
certificate, verifying provider tokens as the real service does) runs in a child process, so the adapter keeps
this process's core; each case sends for the given time with ``concurrency`` sends in flight and reports
notifications/s over the wall clock and per CPU-second of this process (what the adapter costs a worker core).
The stand-in is in Python too and may be the bottleneck on a small machine; the per-CPU-second figure is the
adapter's own. The issue's target (≥ 5,000/s per worker core) is for the whole push path, not the adapter alone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the stand-ins live in tests/fakes

from flare_im.backends.push.apns import ApnsConfig, ApnsProvider
from flare_im.backends.push.base import Notification, PushProvider
from flare_im.backends.push.fcm import FcmConfig, FcmProvider, ServiceAccount

TOPIC = "im.flare.bench"
EMAIL = "bench@flare-bench.iam.gserviceaccount.com"
PROJECT = "flare-bench"


def _pem(key: Any) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _serve(kind: str, public: bytes, directory: str, conn: multiprocessing.connection.Connection) -> None:
    """The child process: run one stand-in until the parent says stop."""
    from tests.fakes.apns import FakeApns
    from tests.fakes.fcm import FakeFcm
    from tests.fakes.server import Certificate, running

    async def main() -> None:
        certificate = Certificate(f"{directory}/fake-cert.pem", f"{directory}/fake-key.pem")
        fake: Any = FakeApns(public, "BENCHKEY01", "BENCHTEAM1", TOPIC) if kind == "apns" else None
        if kind == "fcm":
            fake = FakeFcm(public, EMAIL, PROJECT, token_lifetime_s=3600)
        async with running(fake, certificate) as url:
            if kind == "fcm":
                fake.token_uri = f"{url}/token"
            conn.send(url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(len(fake.accepted))

    uvloop.run(main())


def _provider(kind: str, private: bytes, url: str, ca_file: str) -> PushProvider:
    if kind == "apns":
        return ApnsProvider(ApnsConfig(private, "BENCHKEY01", "BENCHTEAM1", topic=TOPIC, url=url, ca_file=ca_file))
    account = ServiceAccount(EMAIL, private.decode(), f"{url}/token", PROJECT)
    return FcmProvider(FcmConfig(account, url=url, ca_file=ca_file))


def _note(kind: str, i: int) -> Notification:
    return Notification(
        job_id=f"bench:{i}",
        provider=kind,
        token=("ab" * 32) if kind == "apns" else "bench-token-" + "x" * 40,
        title="Ada",
        body=f"message {i}",
        badge=i % 100,
        collapse_id=f"c{i % 50}",
        data={"conv": f"c{i % 50}", "seq": str(i), "msg_id": f"m{i}", "kind": "text", "sender": "ada"},
    )


async def _drive(provider: PushProvider, kind: str, seconds: float, concurrency: int) -> tuple[int, int, float, float]:
    counter = iter(range(10**9))
    sent = other = 0
    await provider.send(_note(kind, next(counter)))  # connect, sign/fetch the credential: not measured
    deadline = time.perf_counter() + seconds

    async def sender() -> None:
        nonlocal sent, other
        while time.perf_counter() < deadline:
            result = await provider.send(_note(kind, next(counter)))
            if result.outcome == "sent":
                sent += 1
            else:
                other += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return sent, other, time.perf_counter() - wall, time.process_time() - cpu


def run_case(kind: str, seconds: float, concurrency: int, directory: str) -> None:
    from tests.fakes.server import self_signed_certificate

    certificate = self_signed_certificate(Path(directory))
    key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "apns" else rsa.generate_private_key(65537, 2048)
    private, public = _pem(key)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(kind, public, directory, child), daemon=True)
    process.start()
    try:
        url = parent.recv()

        async def main() -> tuple[int, int, float, float]:
            provider = _provider(kind, private, url, certificate.cert_file)
            try:
                return await _drive(provider, kind, seconds, concurrency)
            finally:
                await provider.close()

        sent, other, wall, cpu = uvloop.run(main())
        parent.send("stop")
        accepted = parent.recv()
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    print(
        f"{kind:<5} {concurrency} in flight, {wall:.1f}s: {sent} sent ({other} not), stand-in accepted {accepted}; "
        f"{sent / wall:,.0f}/s wall, {sent / cpu:,.0f}/s per CPU-second of the adapter's process"
    )


def main(seconds: float, concurrency: int, kinds: list[str]) -> None:
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="flare-push-bench-") as directory:
            run_case(kind, seconds, concurrency, directory)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        float(args[0]) if args else 5.0,
        int(args[1]) if len(args) > 1 else 200,
        (args[2] if len(args) > 2 else "apns,fcm").split(","),
    )
