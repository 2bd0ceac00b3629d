"""`s3://bucket/prefix` URIs, through boto3: a prefix holding a model directory, or one
archive or file object.

The standard AWS configuration works with no setting of ours (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_REGION, AWS_PROFILE, the
shared config files and, on Kubernetes, the pod's web identity); a repository's own settings
(endpoint, region, addressing style, profile, credentials, anonymous access) win over it.
Downloads go through boto3's TransferManager (parallel ranged GETs, all files at once);
botocore validates the store's checksums where a response carries them (its default,
`response_checksum_validation: when_supported`).

The endpoint's host is resolved and checked against the link-local and metadata addresses
before each presence check and download; botocore (urllib3) resolves it again for each new
connection, so for S3 that check is not pinned to the connection as it is for HTTP(S)
(docs/repositories.md says what is covered).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferManager

from tms_core.repos.archive import extract, is_archive
from tms_core.repos.plain import SettingsFields
from tms_core.repos.policy import Policy, RepositoryError, Resolved
from tms_core.repos.transfer import ObjectInfo, Transfer, with_retries

_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
_MISSING = {"NoSuchKey", "404", "NoSuchBucket", "NotFound"}
CONCURRENCY = 10
# Fewer, larger ranged GETs than boto3's defaults (8 MiB parts, 256 KiB reads): a model is a
# few large files fetched side by side, so parallelism comes from the files as much as from
# the parts, and each request saved is a round trip (and, for stores that slice the object
# per range, as moto does, a pass over it). benchmarks/repositories.py measures it.
PART = 32 * 1024**2
IO_CHUNK = 1024**2


def split(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise RepositoryError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
    return parts.netloc, unquote(parts.path).lstrip("/")


class S3Source:
    def __init__(self, resolved: Resolved, settings: SettingsFields) -> None:
        repo = resolved.repository
        creds = resolved.credentials
        self._prefix = repo.prefix
        self._explicit = not creds.empty
        session = boto3.session.Session(profile_name=repo.profile or None)
        config = Config(
            connect_timeout=min(settings.stall_timeout, 10.0),
            read_timeout=settings.stall_timeout,
            retries={"max_attempts": settings.retries + 1, "mode": "standard"},
            s3={"addressing_style": repo.addressing_style} if repo.addressing_style else None,
            signature_version=UNSIGNED if repo.anonymous else None,
            max_pool_connections=CONCURRENCY * 2,
        )
        kwargs: dict[str, Any] = {"config": config}
        if repo.endpoint_url:
            kwargs["endpoint_url"] = repo.endpoint_url
        if repo.region:
            kwargs["region_name"] = repo.region
        if repo.ca_bundle:
            kwargs["verify"] = repo.ca_bundle
        if creds.access_key_id:
            kwargs["aws_access_key_id"] = creds.access_key_id
            kwargs["aws_secret_access_key"] = creds.secret_access_key
            kwargs["aws_session_token"] = creds.session_token or None
        self.client = session.client("s3", **kwargs)
        self._settings = settings
        self._policy = Policy(settings)

    def _check_endpoint(self, uri: str) -> None:
        """Refuses an endpoint (ours, AWS_ENDPOINT_URL's or AWS's) that resolves to a
        link-local or metadata address, or not at all (naming the model's URI)."""
        endpoint = urlsplit(str(self.client.meta.endpoint_url))
        if endpoint.hostname:
            port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
            try:
                self._policy.addresses(endpoint.hostname, port)
            except RepositoryError as exc:
                raise RepositoryError(f"{uri}: {exc}") from None

    def _error(self, uri: str, exc: BaseException) -> RepositoryError:
        if isinstance(exc, RepositoryError):
            return exc
        if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
            # s3transfer's wrapper of a failed body read: the read's own error says why.
            return self._error(uri, exc.last_exception)
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _DENIED or status == 403:
                where = (
                    f"the credentials of repository {self._prefix!r}"
                    if self._explicit
                    else "the AWS credentials in use (environment, profile or role)"
                )
                return RepositoryError(f"{uri}: access denied ({code or status}); check {where}")
            if code in _MISSING or status == 404:
                return RepositoryError(f"{uri} does not exist ({code or status})")
            return RepositoryError(f"{uri}: S3 error {code or status}", transient=status >= 500)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return RepositoryError(
                f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID, a profile, the "
                "repository's credentials, or anonymous: true for a public bucket)"
            )
        if isinstance(exc, botocore.exceptions.ReadTimeoutError | TimeoutError):
            return RepositoryError(
                f"{uri}: transfer stalled (no byte for {self._settings.stall_timeout:g}s;"
                " repositories.stall_timeout)",
                transient=True,
            )
        if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
            return RepositoryError(f"{uri}: {exc}", transient=True)
        return RepositoryError(f"{uri}: {type(exc).__name__}: {exc}")

    def _listing(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """Every object under `prefix`, folder markers (keys ending in "/") included: an
        ensemble's version directory is empty, and in S3 only a marker can say it exists."""
        objects: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
        return objects

    def stat(self, uri: str) -> ObjectInfo:
        bucket, key = split(uri)
        self._check_endpoint(uri)
        try:
            if key and not key.endswith("/"):
                try:
                    head = self.client.head_object(Bucket=bucket, Key=key)
                except botocore.exceptions.ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                        raise
                else:
                    version = str(head.get("VersionId") or head.get("ETag", ""))
                    kind = "archive" if is_archive(key) else "file"
                    return ObjectInfo(int(head["ContentLength"]), version, kind)
            prefix = key.rstrip("/") + "/" if key else ""
            objects = self._listing(bucket, prefix)
        except Exception as exc:
            raise self._error(uri, exc) from None
        if not any(not str(o["Key"]).endswith("/") for o in objects):
            raise RepositoryError(f"{uri} does not exist (no object under it)")
        digest = hashlib.sha256()
        for o in sorted(objects, key=lambda o: str(o["Key"])):
            digest.update(f"{o['Key']}\0{o.get('ETag', '')}\0{o['Size']}\n".encode())
        return ObjectInfo(sum(int(o["Size"]) for o in objects), digest.hexdigest(), "directory")

    def download(self, uri: str, info: ObjectInfo, dest: Path, transfer: Transfer) -> None:
        bucket, key = split(uri)
        self._check_endpoint(uri)
        transfer.check_size(info.size)
        transfer.total = info.size
        if info.kind == "directory":
            if transfer.sha256:
                raise RepositoryError(
                    "sha256= applies to an archive or a single file, not a directory"
                )
            prefix = key.rstrip("/") + "/" if key else ""
            files = []
            for o in self._listing(bucket, prefix):
                relative = PurePosixPath(str(o["Key"])[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise RepositoryError(
                        f"object key {o['Key']!r} leads outside the model directory"
                    )
                if str(o["Key"]).endswith("/"):
                    dest.joinpath(*relative.parts).mkdir(parents=True, exist_ok=True)
                else:
                    files.append((str(o["Key"]), dest.joinpath(*relative.parts)))
        else:
            name = PurePosixPath(key).name
            target = (
                dest.with_name(dest.name + ".download")
                if info.kind == "archive"
                else dest / "1" / name
            )
            files = [(key, target)]

        def attempt() -> None:
            self._get(uri, bucket, files, transfer)

        try:
            try:
                with_retries(uri, transfer, attempt)
            except Exception as exc:
                raise self._error(uri, exc) from None
            if info.kind != "directory" and transfer.sha256:
                transfer.verify(_sha256(files[0][1]))
            if info.kind == "archive":
                extract(files[0][1], dest, max_bytes=transfer.max_bytes)
        finally:
            if info.kind == "archive":
                files[0][1].unlink(missing_ok=True)

    def _get(
        self, uri: str, bucket: str, files: list[tuple[str, Path]], transfer: Transfer
    ) -> None:
        # One try per part: a stalled or broken transfer is retried whole by with_retries,
        # so retries and stall_timeout bound the time as documented.
        config = TransferConfig(
            max_concurrency=CONCURRENCY,
            num_download_attempts=1,
            multipart_threshold=2 * PART,
            multipart_chunksize=PART,
            io_chunksize=IO_CHUNK,
        )
        try:
            with TransferManager(self.client, config) as manager:
                futures = []
                for key, path in files:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(
                        manager.download(
                            bucket,
                            key,
                            str(path),
                            subscribers=[_Progress(transfer)],
                        )
                    )
                for future in futures:
                    future.result()
        except RepositoryError:
            raise
        except Exception as exc:
            raise self._error(uri, exc) from None


class _Progress:
    """An s3transfer subscriber counting bytes into the transfer (and its limit)."""

    def __init__(self, transfer: Transfer) -> None:
        self._transfer = transfer

    def on_queued(self, **kwargs: Any) -> None:
        pass

    def on_progress(self, bytes_transferred: int, **kwargs: Any) -> None:
        self._transfer.add(bytes_transferred)

    def on_done(self, **kwargs: Any) -> None:
        pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def make(resolved: Resolved, settings: SettingsFields) -> S3Source:
    return S3Source(resolved, settings)
