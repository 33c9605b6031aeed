"""The object store on S3 and S3-compatible servers (MinIO, Cloudflare R2, Alibaba OSS, s3rver) over aiobotocore.

``object_store_url``: ``s3://[ACCESS_KEY:SECRET@]bucket[/prefix]?endpoint=http://host:port&region=us-east-1``.
Without keys in the URL, botocore's usual chain applies (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role). ``endpoint`` is left out for AWS itself; ``addressing=virtual`` asks for
virtual-host-style requests (path-style is the default: what MinIO and s3rver expect). The bucket is created
when missing.

A ``put`` of unknown length buffers up to ``part_size`` bytes: a smaller object is one PutObject, a larger one
a multipart upload of ``part_size`` parts (aborted if the stream fails), so memory per upload stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from flare_im.backends.objects.base import CHUNK, MIN_PART, ObjectInfo, ObjectNotFound, PartTooSmall, check_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str
    prefix: str = ""  # prepended to every key ("flare/" to share a bucket)
    endpoint: str = ""  # empty: AWS
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = ""
    addressing: str = "path"  # path | virtual
    part_size: int = 8 * 2**20  # a streamed put goes multipart above this
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0


def s3_config_from_url(url: str) -> S3Config:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError(f"object_store_url {url!r}: expected s3://bucket[/prefix]?endpoint=...")
    query = dict(urllib.parse.parse_qsl(parts.query))
    unknown = set(query) - {"endpoint", "region", "addressing", "part_size"}
    if unknown:
        raise ValueError(f"object_store_url: unknown parameter(s) {', '.join(sorted(unknown))}")
    prefix = parts.path.strip("/")
    addressing = query.get("addressing", "path")
    if addressing not in ("path", "virtual"):
        raise ValueError("object_store_url: addressing must be path or virtual")
    part_size = int(query.get("part_size", 8 * 2**20))
    if part_size < MIN_PART:
        raise ValueError(f"object_store_url: part_size must be at least {MIN_PART}")
    return S3Config(
        bucket=parts.hostname,
        prefix=f"{prefix}/" if prefix else "",
        endpoint=query.get("endpoint", ""),
        region=query.get("region", "us-east-1"),
        access_key=urllib.parse.unquote(parts.username or ""),
        secret_key=urllib.parse.unquote(parts.password or ""),
        addressing=addressing,
        part_size=part_size,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


class S3ObjectStore:
    def __init__(self, config: S3Config, client: Any, context: Any) -> None:
        self.config = config
        self._client = client
        self._context = context
        self._bucket = config.bucket

    @classmethod
    async def open(cls, config: S3Config) -> S3ObjectStore:
        session = get_session()
        kwargs: dict[str, Any] = {
            "region_name": config.region,
            "config": AioConfig(
                s3={"addressing_style": config.addressing},
                signature_version="s3v4",
                connect_timeout=config.connect_timeout_s,
                read_timeout=config.read_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                # Checksums only where S3 demands them: older S3-compatible servers refuse the new headers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        if config.endpoint:
            kwargs["endpoint_url"] = config.endpoint
        if config.access_key:
            kwargs["aws_access_key_id"] = config.access_key
            kwargs["aws_secret_access_key"] = config.secret_key
        context = session.create_client("s3", **kwargs)
        client = await context.__aenter__()
        store = cls(config, client, context)
        try:
            await store._ensure_bucket()
        except BaseException:
            await store.close()
            raise
        return store

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING and _code(exc) != "NoSuchBucket":
                raise
            try:
                await self._client.create_bucket(Bucket=self._bucket)
            except ClientError as again:
                if _code(again) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _key(self, key: str) -> str:
        return self.config.prefix + check_key(key)

    async def close(self) -> None:
        await self._context.__aexit__(None, None, None)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        name = self._key(key)
        part_size = self.config.part_size
        buffer = bytearray()
        upload_id = ""
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= part_size + MIN_PART:  # keep the last part at least MIN_PART
                    if not upload_id:
                        created = await self._client.create_multipart_upload(
                            Bucket=self._bucket, Key=name, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    number = len(parts) + 1
                    answer = await self._client.upload_part(
                        Bucket=self._bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=bytes(buffer[:part_size]),
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    del buffer[:part_size]
            if not upload_id:
                await self._client.put_object(
                    Bucket=self._bucket, Key=name, Body=bytes(buffer), ContentType=content_type
                )
                return size
            number = len(parts) + 1
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return size
        except BaseException:
            if upload_id:
                # Best effort: what is left is the storage's lifecycle rule's (or our collector's) to clean up.
                with contextlib.suppress(Exception):
                    await self._client.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)
            raise

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = await self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return ObjectInfo(key, int(answer["ContentLength"]), answer.get("ContentType", "application/octet-stream"))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key)}
        if end is not None and end <= start:
            return
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await self._client.get_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectNotFound(key) from None
            if _code(exc) == "InvalidRange":
                return
            raise
        body = answer["Body"]
        try:
            async for chunk in body.iter_chunks(CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    # ---------------------------------------------------------------- multipart

    async def create_upload(self, key: str, *, content_type: str) -> str:
        answer = await self._client.create_multipart_upload(
            Bucket=self._bucket, Key=self._key(key), ContentType=content_type
        )
        return str(answer["UploadId"])

    async def put_part(self, key: str, upload_id: str, number: int, chunks: AsyncIterable[bytes]) -> str:
        if not 1 <= number <= 10_000:
            raise ValueError("part numbers are 1..10000")
        data = b"".join([chunk async for chunk in chunks])  # a part is bounded by the caller
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=self._key(key), UploadId=upload_id, PartNumber=number, Body=data
            )
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectNotFound(f"no upload {upload_id}") from None
            raise
        return str(answer["ETag"]).strip('"')

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        numbers = [n for n, _ in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise ValueError("parts must be listed once each, in ascending order")
        listed = [{"PartNumber": n, "ETag": f'"{etag.strip(chr(34))}"'} for n, etag in parts]
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key(key), UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                raise ObjectNotFound(f"no upload {upload_id}") from None
            if code == "EntityTooSmall":
                raise PartTooSmall(f"every part but the last must be at least {MIN_PART} bytes") from None
            if code in ("InvalidPart", "InvalidPartOrder"):
                raise ValueError(f"{code}: a listed part was not uploaded or has another etag") from None
            raise
        info = await self.head(key)
        if info is None:
            raise ObjectNotFound(key)
        return info.size

    async def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key(key), UploadId=upload_id)
        except ClientError as exc:
            code = _code(exc)
            if code in ("MethodNotAllowed", "NotImplemented"):
                # Some S3-compatible servers (s3rver) cannot abort: the parts stay until a lifecycle rule.
                log.warning(
                    "%s cannot abort multipart uploads (%s); upload %s left to the storage",
                    self._bucket,
                    code,
                    upload_id,
                )
                return
            if code not in _MISSING:
                raise

    # ---------------------------------------------------------------- presigned URLs

    async def presign_get(self, key: str, ttl_s: int, *, filename: str = "") -> str:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key)}
        if filename:
            quoted = urllib.parse.quote(filename, safe="")
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quoted}"
        url: str = await self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s)
        return url

    async def presign_part(self, key: str, upload_id: str, number: int, ttl_s: int) -> str:
        params = {"Bucket": self._bucket, "Key": self._key(key), "UploadId": upload_id, "PartNumber": number}
        url: str = await self._client.generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl_s)
        return url
