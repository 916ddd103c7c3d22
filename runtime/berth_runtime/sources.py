"""Model sources: turn a model URI into a local path, fetching and unpacking as needed.

Supported URIs:

- ``/abs/path`` or ``file:///abs/path``: used in place.
- ``pvc://<claim>/<path>``: the claim is mounted at ``<pvc_root>/<claim>``.
- ``https://host/m.tar.gz#sha256=<hex>``: downloaded, verified, cached by digest.
  ``http://`` is accepted too because the digest, not the transport, proves integrity.
- ``s3://bucket/key`` (boto3) and ``gs://bucket/key`` (google-cloud-storage):
  credentials come from the environment the usual way for each library. A key
  ending in ``/`` (or naming no single object) downloads every object under it.
  In a pod the operator fills that environment from the Secret the ModelDeployment
  names (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_ENDPOINT_URL``,
  ``AWS_REGION``; or ``GOOGLE_APPLICATION_CREDENTIALS``) and turns the node's metadata
  credentials off (``AWS_EC2_METADATA_DISABLED``, ``NO_GCE_CHECK``).

Archives are unpacked with :mod:`berth_runtime.archives` into ``<cache>/unpacked/<sha256>``.
Downloads and archives are bounded by :class:`~berth_runtime.archives.Limits`: a download
over ``max_download_bytes`` (declared or counted) or larger than the cache disk's free space
is refused before or while it is written, and the partial file is removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from berth_runtime import archives
from berth_runtime.archives import Limits
from berth_runtime.errors import ModelLoadError

if TYPE_CHECKING:
    from berth_runtime.settings import Settings

log = logging.getLogger("berth.sources")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def redact(url: str) -> str:
    """The URL without user-info, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def limits(settings: Settings) -> Limits:
    """The download and archive caps from the runtime settings."""
    return Limits(
        max_download_bytes=settings.max_download_bytes,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_entries=settings.max_archive_entries,
        max_ratio=settings.max_compression_ratio,
    )


def check_download(what: str, size: int, lim: Limits, dest_dir: Path) -> None:
    """Refuse a download over the cap or larger than the free space where it goes."""
    if size > lim.max_download_bytes:
        raise ModelLoadError(
            f"{what} is {size} bytes, over the download limit of {lim.max_download_bytes} "
            "(--max-download-bytes / BERTH_MAX_DOWNLOAD_BYTES); refused"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest_dir).free
    if size > free:
        raise ModelLoadError(f"{what} is {size} bytes but the cache disk has {free} bytes free")


def resolve(uri: str, cache_dir: Path, pvc_root: Path, lim: Limits | None = None) -> Path:
    """Return a local file or directory holding the model named by ``uri``."""
    lim = lim or Limits()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = Path(unquote(parts.path) if scheme else uri)
    elif scheme == "pvc":
        rel = Path(parts.netloc, unquote(parts.path).lstrip("/"))
        if ".." in rel.parts:
            raise ModelLoadError(f"pvc URI {uri!r} must not contain '..'")
        path = pvc_root / rel
    elif scheme in ("https", "http"):
        path = fetch_http(uri, cache_dir, lim)
    elif scheme == "s3":
        path = fetch_s3(parts.netloc, unquote(parts.path).lstrip("/"), cache_dir, lim)
    elif scheme == "gs":
        path = fetch_gcs(parts.netloc, unquote(parts.path).lstrip("/"), cache_dir, lim)
    else:
        raise ModelLoadError(
            f"model URI scheme {scheme!r} is not supported; use a path, file://, pvc://, "
            "https://...#sha256=<hex>, s3:// or gs://"
        )
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist (from {uri!r})")
    if archives.is_archive(path):
        path = unpack(path, cache_dir, lim)
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def unpack(archive: Path, cache_dir: Path, lim: Limits | None = None) -> Path:
    """Unpack an archive once per content digest and return the model root inside it."""
    digest = file_digest(archive)
    dest = cache_dir / "unpacked" / digest
    if not dest.is_dir():
        log.info("unpacking %s into %s", archive.name, dest)
        archives.extract(archive, dest, lim)
    return archives.single_root(dest)


class _Progress:
    """Logs download progress at most every few seconds."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 2.0:
            self.last = now
            if self.total:
                pct = 100.0 * self.done / self.total
                log.info("downloading %s: %.1f%% of %d bytes", self.what, pct, self.total)
            else:
                log.info("downloading %s: %d bytes", self.what, self.done)

    def finish(self) -> None:
        log.info("downloaded %s: %d bytes", self.what, self.done)


def fetch_http(uri: str, cache_dir: Path, lim: Limits | None = None) -> Path:
    """Download ``uri`` (which must carry ``#sha256=<hex>``), verify it, cache it by digest."""
    parts = urlsplit(uri)
    frag = parts.fragment
    if not frag.startswith("sha256="):
        raise ModelLoadError(f"HTTP model URIs must end with #sha256=<hex digest>: {redact(uri)!r}")
    lim = lim or Limits()
    want = frag.removeprefix("sha256=").lower()
    if not _SHA256.match(want):
        raise ModelLoadError(f"#sha256= must be 64 hex characters in {redact(uri)!r}")
    filename = Path(unquote(parts.path)).name or "model"
    blob_dir = cache_dir / "blobs" / want
    target = blob_dir / filename
    if target.is_file():
        log.info("model %s found in cache by digest", filename)
        return target
    blob_dir.mkdir(parents=True, exist_ok=True)
    import httpx  # here, not at the top: a start-up that fetches nothing over HTTP skips it

    url = parts._replace(fragment="").geturl()
    shown = redact(url)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".dl-", dir=blob_dir)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as resp,
        ):
            if resp.status_code != 200:
                raise ModelLoadError(f"GET {shown} returned HTTP {resp.status_code}")
            length = resp.headers.get("content-length")
            declared = int(length) if length and length.isascii() and length.isdigit() else None
            if declared is not None:
                check_download(shown, declared, lim, blob_dir)
            progress = _Progress(filename, declared)
            for chunk in resp.iter_bytes(_CHUNK):
                if progress.done + len(chunk) > lim.max_download_bytes:
                    raise ModelLoadError(
                        f"{shown} sent more than the download limit of {lim.max_download_bytes} "
                        "bytes (--max-download-bytes / BERTH_MAX_DOWNLOAD_BYTES); refused"
                    )
                h.update(chunk)
                out.write(chunk)
                progress.add(len(chunk))
            progress.finish()
        got = h.hexdigest()
        if got != want:
            raise ModelLoadError(
                f"sha256 mismatch for {shown}: expected {want}, got {got}; refused"
            )
        os.replace(tmp_name, target)
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"cannot download {shown}: {str(exc).replace(url, shown)}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _object_dir(cache_dir: Path, uri: str, version: str) -> Path:
    key = hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()
    return cache_dir / "objects" / key


def _safe_rel(prefix: str, key: str) -> Path:
    rel = key[len(prefix) :].lstrip("/") if prefix else key
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise ModelLoadError(f"object key {key!r} is not a safe relative path; refused")
    return p


def s3_client() -> Any:
    """A boto3 S3 client from the environment; path-style addressing for a custom endpoint
    (S3-compatible servers rarely resolve bucket host names)."""
    try:
        import boto3  # type: ignore[import-not-found, unused-ignore]
        from botocore.config import Config  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ModelLoadError("s3:// needs boto3: install berth[s3]") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    style = os.environ.get("BERTH_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 3})
    # A fresh session: credentials are read from the environment now, not cached from before.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def _s3_error(uri: str, exc: Exception) -> ModelLoadError:
    """A boto3/botocore failure as a ModelLoadError a person can act on."""
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ModelLoadError(
            f"{uri}: no s3 credentials: name a Secret with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in spec.model.credentials.secretRef (or a service account "
            "for workload identity); the node's own identity is never used"
        )
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) or name
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return ModelLoadError(f"{uri}: access denied ({code}): check the credentials' Secret")
    if code in ("NoSuchBucket", "NoSuchKey", "404"):
        return ModelLoadError(f"{uri}: no such bucket or object ({code})")
    return ModelLoadError(f"{uri}: {code}: {exc}")


def fetch_s3(bucket: str, key: str, cache_dir: Path, lim: Limits | None = None) -> Path:
    """Download an object or every object under a prefix with boto3."""
    uri = f"s3://{bucket}/{key}"
    client = s3_client()
    try:
        return _fetch_s3(client, bucket, key, uri, cache_dir, lim)
    except ModelLoadError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer"):
            raise _s3_error(uri, exc) from exc
        raise


def _fetch_s3(
    client: Any, bucket: str, key: str, uri: str, cache_dir: Path, lim: Limits | None
) -> Path:
    keys: list[tuple[str, str, int]] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            keys.append((obj["Key"], obj.get("ETag", ""), int(obj.get("Size", 0))))
    if not keys:
        raise ModelLoadError(f"{uri}: no such object or prefix")
    exact = [k for k in keys if k[0] == key]
    check_download(uri, sum(k[2] for k in (exact or keys)), lim or Limits(), cache_dir)
    version = "|".join(f"{k}:{e}" for k, e, _ in (exact or keys))
    dest = _object_dir(cache_dir, uri, version)
    if exact:
        target = dest / Path(key).name
        if not target.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            progress = _Progress(uri, exact[0][2])
            client.download_file(bucket, key, str(target), Callback=progress.add)
            progress.finish()
        return target
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache_dir))
        prefix = key if key.endswith("/") or not key else key + "/"
        for k, _etag, size in keys:
            if k.endswith("/"):
                continue
            out = tmp / _safe_rel(prefix, k)
            out.parent.mkdir(parents=True, exist_ok=True)
            progress = _Progress(f"s3://{bucket}/{k}", size)
            client.download_file(bucket, k, str(out), Callback=progress.add)
            progress.finish()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    return dest


def fetch_gcs(bucket: str, key: str, cache_dir: Path, lim: Limits | None = None) -> Path:
    """Download an object or every object under a prefix with google-cloud-storage."""
    try:
        from google.cloud import storage  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ModelLoadError("gs:// needs google-cloud-storage: install berth[gcs]") from None
    client: Any = storage.Client()
    uri = f"gs://{bucket}/{key}"
    blobs = [b for b in client.list_blobs(bucket, prefix=key) if not b.name.endswith("/")]
    if not blobs:
        raise ModelLoadError(f"{uri}: no such object or prefix")
    exact = [b for b in blobs if b.name == key]
    check_download(uri, sum(int(b.size or 0) for b in (exact or blobs)), lim or Limits(), cache_dir)
    version = "|".join(f"{b.name}:{b.md5_hash or b.etag}" for b in (exact or blobs))
    dest = _object_dir(cache_dir, uri, version)
    if exact:
        target = dest / Path(key).name
        if not target.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s (%s bytes)", uri, exact[0].size)
            exact[0].download_to_filename(str(target))
            log.info("downloaded %s", uri)
        return target
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache_dir))
        prefix = key if key.endswith("/") or not key else key + "/"
        for i, blob in enumerate(blobs, 1):
            out = tmp / _safe_rel(prefix, blob.name)
            out.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading gs://%s/%s (%d of %d)", bucket, blob.name, i, len(blobs))
            blob.download_to_filename(str(out))
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    return dest
