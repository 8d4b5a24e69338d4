"""How every `vsp` command fails: one line on stderr that names the cause and what to do, and an exit code.

Exit codes, the same for every command (`EXIT_CODES`; the README's table is this one):

====  ==============================================================================================
0     success
1     a check found problems (`vsp images validate`), a submitted job failed, or an unexpected internal
      error (printed as one line; ``vsp -v <command> ...`` prints the traceback)
2     bad input: an option, a file (norms, images, weights, run configuration), a missing store folder
3     the store already holds results of another configuration (choose a new --store, or rerun with the
      configuration it records)
4     storage or network: S3 endpoint unreachable, missing bucket, missing or refused credentials, access
      denied; permission denied or no space left on a local path
130   interrupted (Ctrl-C); finished work units are kept and a rerun resumes
====  ==============================================================================================

`describe` maps an exception to ``(exit code, message)``; the Typer group in `vsp.cli.app` calls it for
anything a command raises. It looks through the exception's causes, so the S3 errors that s3fs/aiobotocore
wrap as ``OSError`` / ``PermissionError`` / ``FileNotFoundError`` and the errors Ray re-raises from its
workers are named by their real cause. Secrets are never printed: not the keys, not the signed URLs.
"""

from __future__ import annotations

import errno
import os
import sys
from urllib.parse import urlsplit

from vsp.errors import ConfigMismatchError, VspInputError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_MISMATCH = 3
EXIT_STORAGE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_PROBLEMS: "a check found problems, a submitted job failed, or an internal error (-v: traceback)",
    EXIT_INPUT: "bad input: an option, a file, a run configuration, a missing store folder",
    EXIT_MISMATCH: "the store holds results of another configuration",
    EXIT_STORAGE: "storage or network unreachable, missing bucket, credentials missing or refused, denied",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a rerun resumes",
}

_MAX_MESSAGE = 600  # characters: a message is one line, not a dump


def one_line(text: object, limit: int = _MAX_MESSAGE) -> str:
    """``text`` with every run of whitespace (newlines included) folded to one space, cut at ``limit``."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _ray_cause(exc: BaseException) -> BaseException | None:
    """The worker's exception inside a Ray ``RayTaskError`` (whose own text is the remote traceback).

    Recognised by class name (Ray makes subclasses per cause), so this module never imports Ray.
    """
    names = {c.__name__ for c in type(exc).__mro__}
    cause = getattr(exc, "cause", None)
    return cause if "RayTaskError" in names and isinstance(cause, BaseException) else None


def causes(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """``exc`` and what it was raised from (``__cause__``, else an unsuppressed ``__context__``).

    Outermost first; a Ray task error is replaced by the worker's exception.
    """
    out: list[BaseException] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(out) < limit:
        seen.add(id(e))
        inner = _ray_cause(e)
        if inner is not None:
            e = inner
            continue
        out.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return out


def _endpoint(url: str | None = None) -> str:
    """Scheme and host of the S3 endpoint (never the path: it may carry keys or a signed query)."""
    url = url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return "AWS S3"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and its credentials file"


def _client_error(e: BaseException) -> tuple[int, str] | None:
    """A botocore ClientError: the server answered, with an error code."""
    response = getattr(e, "response", None) or {}
    err = response.get("Error", {}) or {}
    code = str(err.get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    op = getattr(e, "operation_name", "") or "request"
    bucket = err.get("BucketName")
    at = _endpoint()
    on = f" on bucket {bucket!r}" if bucket else ""
    if code == "NoSuchBucket" or (op in ("HeadBucket", "ListObjectsV2") and code in ("404", "NotFound")):
        name = f" {bucket!r}" if bucket else ""
        return EXIT_STORAGE, (
            f"S3 bucket{name} does not exist at {at}: create it (aws s3 mb s3://{bucket or 'BUCKET'}) "
            "or fix the bucket in the s3:// URI"
        )
    if code == "InvalidAccessKeyId":
        return EXIT_STORAGE, (
            f"the S3 server at {at} does not know this access key (InvalidAccessKeyId): {_CREDENTIALS_HINT}"
        )
    if code == "SignatureDoesNotMatch":
        return EXIT_STORAGE, (
            f"the S3 server at {at} rejected the request signature (SignatureDoesNotMatch: wrong secret "
            f"key?): {_CREDENTIALS_HINT}"
        )
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired", "ExpiredTokenException"):
        return EXIT_STORAGE, (
            f"the S3 session token was refused ({code}): refresh the credentials (AWS_SESSION_TOKEN, "
            "aws sso login)"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden") or status == 403:
        return EXIT_STORAGE, (
            f"access denied by the S3 server at {at} ({op}{on}): {_CREDENTIALS_HINT}, and the bucket policy"
        )
    if code in ("NoSuchKey", "404", "NotFound"):
        return None  # a missing object: the FileNotFoundError around it names the key
    if code in ("SlowDown", "ServiceUnavailable", "InternalError", "503", "500", "502", "504"):
        return EXIT_STORAGE, f"the S3 server at {at} is failing ({code} on {op}): retry later"
    msg = err.get("Message") or ""
    return EXIT_STORAGE, one_line(f"S3 {op} failed at {at}{on}: {code or status} {msg}")


def _s3_error(chain: list[BaseException]) -> tuple[int, str] | None:
    """The first botocore error among the causes, as (exit code, message); None when there is none."""
    if "botocore" not in sys.modules:
        return None
    from botocore import exceptions as be

    for e in chain:
        if isinstance(e, be.NoCredentialsError):
            return EXIT_STORAGE, (
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                "(or run where an instance role applies)"
            )
        if isinstance(e, be.PartialCredentialsError):
            return EXIT_STORAGE, f"incomplete AWS credentials ({one_line(e)}): {_CREDENTIALS_HINT}"
        if isinstance(e, be.ProfileNotFound):
            return (
                EXIT_STORAGE,
                f"{one_line(e)}: set AWS_PROFILE to a profile in your AWS config, or unset it",
            )
        if isinstance(e, be.NoRegionError):
            return EXIT_STORAGE, "no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION)"
        if isinstance(e, be.SSLError):
            url = _endpoint(getattr(e, "kwargs", {}).get("endpoint_url"))
            return (
                EXIT_STORAGE,
                f"TLS error with the S3 endpoint {url}: check AWS_ENDPOINT_URL (http or https)",
            )
        if isinstance(e, be.EndpointConnectionError | be.ConnectTimeoutError | be.ProxyConnectionError):
            url = _endpoint(getattr(e, "kwargs", {}).get("endpoint_url"))
            return EXIT_STORAGE, (
                f"cannot reach the S3 endpoint {url}: is the server running? check AWS_ENDPOINT_URL and the "
                "network"
            )
        if isinstance(e, be.ReadTimeoutError | be.ConnectionClosedError):
            url = _endpoint(getattr(e, "kwargs", {}).get("endpoint_url"))
            return EXIT_STORAGE, f"the S3 endpoint {url} stopped answering: check the server and retry"
        if isinstance(e, be.ClientError):
            found = _client_error(e)
            if found is not None:
                return found
        elif isinstance(e, be.BotoCoreError):
            return EXIT_STORAGE, f"S3 client error: {one_line(e)}"
    return None


def _path_of(e: OSError) -> str:
    return os.fsdecode(e.filename) if e.filename is not None else ""


def _os_error(e: OSError) -> tuple[int, str]:
    """A local file-system error (no S3 cause): which path, what happened, what to do."""
    path = _path_of(e)
    where = f"{path}: " if path else ""
    if isinstance(e, FileNotFoundError):
        if not path:  # vsp's own "no such key: <uri>" and s3fs's messages
            return EXIT_INPUT, one_line(e)
        return EXIT_INPUT, f"{where}no such file or folder; check the path"
    if isinstance(e, NotADirectoryError | FileExistsError):
        return EXIT_INPUT, (
            f"{where}a file is in the way where a folder is needed (the path, or a folder in it, is a file); "
            "choose another path"
        )
    if isinstance(e, IsADirectoryError):
        return EXIT_INPUT, f"{where}is a folder where a file is needed; check the path"
    if isinstance(e, PermissionError):
        return EXIT_STORAGE, f"{where}permission denied; check its permissions or choose another path"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_STORAGE, f"{where}no space left on the device (or quota exceeded); free space and rerun"
    if e.errno == errno.EROFS:
        return EXIT_STORAGE, f"{where}read-only file system; choose a writable path"
    return EXIT_STORAGE, one_line(f"{where}{e.strerror or e}" if e.strerror else f"I/O error: {e}")


def describe(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception a command raised (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; finished work units are kept: rerun the same command to resume"
    chain = causes(exc)
    for e in chain:  # vsp's own errors name the file, row, key or option at fault
        if isinstance(e, ConfigMismatchError):
            return EXIT_MISMATCH, one_line(e)
        if isinstance(e, VspInputError):
            return EXIT_INPUT, one_line(e)
    found = _s3_error(chain)
    if found is not None:
        return found
    for e in chain:
        if isinstance(e, OSError):
            return _os_error(e)
    top = chain[0] if chain else exc
    text = one_line(top, 300)
    return EXIT_INTERNAL, f"internal error: {type(top).__name__}{': ' + text if text else ''}"
