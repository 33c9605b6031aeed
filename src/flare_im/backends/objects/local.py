"""The object store in a local directory (the embedded default: ``<data_dir>/media``).

Objects are files under ``objects/`` named by their key; a put writes ``tmp/<random>`` then renames it over the
key's file (``os.replace`` is atomic on one file system), so a reader never sees half an object. Multipart
uploads keep their parts under ``uploads/<id>/``; completion concatenates them into a temporary file and renames
it into place. File I/O runs in worker threads: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flare_im.backends.objects.base import CHUNK, MIN_PART, ObjectInfo, ObjectNotFound, PartTooSmall, check_key

_META = ".type"  # beside an object's file: its content type


@dataclass(frozen=True, slots=True)
class LocalConfig:
    root: str


class LocalObjectStore:
    def __init__(self, config: LocalConfig) -> None:
        self.root = Path(config.root)
        self._objects = self.root / "objects"
        self._uploads = self.root / "uploads"
        self._tmp = self.root / "tmp"
        for d in (self._objects, self._uploads, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._objects / check_key(key)

    async def _spool(self, chunks: AsyncIterable[bytes]) -> tuple[Path, int, str]:
        """Write ``chunks`` to a new temporary file: its path, size and MD5 (S3's etag of a single put)."""
        path = self._tmp / secrets.token_hex(12)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        f: BinaryIO = await asyncio.to_thread(open, path, "wb")
        try:
            async for chunk in chunks:
                if chunk:
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(_sync_close, f)
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
        return path, size, digest.hexdigest()

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        target = self._path(key)
        tmp, size, _ = await self._spool(chunks)
        await asyncio.to_thread(_install, tmp, target, content_type)
        return size

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        meta = path.with_name(path.name + _META)
        try:
            content_type = await asyncio.to_thread(meta.read_text)
        except FileNotFoundError:
            content_type = "application/octet-stream"
        return ObjectInfo(key, size, content_type)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            await asyncio.to_thread(f.seek, start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                chunk = await asyncio.to_thread(f.read, CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            path.with_name(path.name + _META).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def close(self) -> None:
        return None

    # ---------------------------------------------------------------- multipart

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ObjectNotFound(upload_id)
        return self._uploads / upload_id

    async def create_upload(self, key: str, *, content_type: str) -> str:
        check_key(key)
        upload_id = secrets.token_hex(16)
        directory = self._uploads / upload_id
        info = json.dumps({"key": key, "content_type": content_type})

        def make() -> None:
            directory.mkdir()
            (directory / "upload.json").write_text(info)

        await asyncio.to_thread(make)
        return upload_id

    async def _upload_info(self, key: str, upload_id: str) -> tuple[Path, dict[str, str]]:
        directory = self._upload_dir(upload_id)
        try:
            info: dict[str, str] = json.loads(await asyncio.to_thread((directory / "upload.json").read_text))
        except FileNotFoundError:
            raise ObjectNotFound(f"no upload {upload_id}") from None
        if info["key"] != key:
            raise ObjectNotFound(f"no upload {upload_id} for {key}")
        return directory, info

    async def put_part(self, key: str, upload_id: str, number: int, chunks: AsyncIterable[bytes]) -> str:
        if not 1 <= number <= 10_000:
            raise ValueError("part numbers are 1..10000")
        directory, _ = await self._upload_info(key, upload_id)
        tmp, _, etag = await self._spool(chunks)
        try:
            await asyncio.to_thread(os.replace, tmp, directory / f"{number}.{etag}")
        except FileNotFoundError:  # aborted meanwhile
            tmp.unlink(missing_ok=True)
            raise ObjectNotFound(f"no upload {upload_id}") from None

        def drop_older() -> None:  # a part uploaded again: the last one counts
            for old in directory.glob(f"{number}.*"):
                if old.name != f"{number}.{etag}":
                    old.unlink(missing_ok=True)

        await asyncio.to_thread(drop_older)
        return etag

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        directory, info = await self._upload_info(key, upload_id)
        numbers = [n for n, _ in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise ValueError("parts must be listed once each, in ascending order")
        files = [directory / f"{n}.{etag.strip(chr(34))}" for n, etag in parts]
        target = self._path(key)
        tmp = self._tmp / secrets.token_hex(12)

        def join() -> int:
            sizes = []
            for f in files:
                try:
                    sizes.append(f.stat().st_size)
                except FileNotFoundError:
                    raise ValueError(f"part {f.name.split('.')[0]}: no such part or a different etag") from None
            if any(size < MIN_PART for size in sizes[:-1]):
                raise PartTooSmall(f"every part but the last must be at least {MIN_PART} bytes")
            with open(tmp, "wb") as out:
                for f in files:
                    with open(f, "rb") as part:
                        shutil.copyfileobj(part, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            _install(tmp, target, info["content_type"])
            shutil.rmtree(directory, ignore_errors=True)
            return sum(sizes)

        try:
            return await asyncio.to_thread(join)
        finally:
            tmp.unlink(missing_ok=True)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            directory, _ = await self._upload_info(key, upload_id)
        except ObjectNotFound:
            return
        await asyncio.to_thread(shutil.rmtree, directory, True)


def _sync_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _install(tmp: Path, target: Path, content_type: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_name(target.name + _META).write_text(content_type)
    os.replace(tmp, target)
