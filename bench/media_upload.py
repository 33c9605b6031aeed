"""A large upload through a real `flare serve`: in one request (POST /v1/media) and in parts (presign, PUT each
part, complete), to the local store or to S3. Prints the time, the throughput and the server's peak RSS (VmHWM),
which shows that a file is streamed, not held in memory.

Run: .venv/bin/python bench/media_upload.py [MiB] [local|s3]   (defaults 256, local)
s3 uses s3rver from scripts/services.sh start (FLARE_TEST_S3_URL, default http://127.0.0.1:14568).
A 1 GiB upload is `bench/media_upload.py 1024`; CI runs three parts of 5, 5 and 1 MiB (tests/e2e/test_media.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import Harness, ServerProcess

MIB = 2**20
CHUNK = MIB


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def zeros(size: int) -> AsyncIterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield block[:n]
        sent += n


async def main(mib: int, store: str) -> None:
    size = mib * MIB
    env = {"FLARE_MEDIA_FILE_MAX_BYTES": str(size + MIB), "FLARE_MEDIA_QUOTA_BYTES": "0"}
    if store == "s3":
        endpoint = os.environ.get("FLARE_TEST_S3_URL", "http://127.0.0.1:14568")
        env["FLARE_OBJECT_STORE_URL"] = f"s3://S3RVER:S3RVER@bench-{uuid.uuid4().hex[:12]}?endpoint={endpoint}"
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data", env_overrides=env)
        srv.start()
        h = Harness(srv)
        try:
            await h.user("alice")
            headers = {"Authorization": f"Bearer {h.tokens['alice']}"}
            async with httpx.AsyncClient(base_url=srv.api_url, headers=headers, trust_env=False, timeout=600) as c:
                assert srv.proc is not None
                start = time.perf_counter()
                one = await c.post("/v1/media", params={"kind": "file"}, content=zeros(size))
                took = time.perf_counter() - start
                assert one.status_code == 201, one.text
                print(f"{store}: one request  {mib} MiB in {took:.1f} s = {mib / took:.0f} MiB/s")
                start = time.perf_counter()
                plan = (await c.post("/v1/media:presign", json={"kind": "file", "size": size})).json()
                parts = []
                async with httpx.AsyncClient(trust_env=False, timeout=600) as raw:
                    for part in plan["parts"]:
                        n, url = part["number"], part["url"]
                        url = srv.api_url + url if url.startswith("/") else url
                        length = min(plan["part_size"], size - (n - 1) * plan["part_size"])
                        # bytes, not a stream: S3 wants a Content-Length on a part
                        put = await raw.put(url, content=os.urandom(length), headers=part["headers"])
                        assert put.status_code == 200, put.text
                        parts.append({"number": n, "etag": put.headers["etag"].strip('"')})
                done = await c.post("/v1/media:complete", json={"media_id": plan["media_id"], "parts": parts})
                took = time.perf_counter() - start
                assert done.status_code == 200, done.text
                print(f"{store}: {len(parts)} parts     {mib} MiB in {took:.1f} s = {mib / took:.0f} MiB/s")
                print(f"server peak RSS {peak_rss_mib(srv.proc.pid):.0f} MiB")
        finally:
            await h.close()
            srv.stop()
            if store == "s3":
                await drop_bucket(env["FLARE_OBJECT_STORE_URL"])


async def drop_bucket(url: str) -> None:
    from flare_im.backends.objects.s3 import S3ObjectStore, s3_config_from_url

    objects = await S3ObjectStore.open(s3_config_from_url(url))
    client, bucket = objects._client, objects.config.bucket
    try:
        for item in (await client.list_objects_v2(Bucket=bucket)).get("Contents", []):
            await client.delete_object(Bucket=bucket, Key=item["Key"])
        await client.delete_bucket(Bucket=bucket)
    finally:
        await objects.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 256, sys.argv[2] if len(sys.argv) > 2 else "local"))
