"""Exceptions raised by the troupe client, and the mapping from gRPC errors to them."""

from typing import Optional

import grpc

TOKEN_LOOKUP = (
    "this order: the `token` argument, $TROUPE_TOKEN, the file named by $TROUPE_TOKEN_FILE, "
    "$TROUPE_HOME/head/token, /tmp/troupe-up/head/token (the head writes its token to the "
    "file `token` in its --data-dir)"
)


class TroupeError(Exception):
    """Any failure of a troupe client call; `code` is the gRPC status code when the head answered."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(TroupeError, ValueError):
    """The head address or the token given (or found) cannot be used."""


class AuthenticationError(TroupeError):
    """The head refused the cluster token (none was sent, or it is wrong)."""


class JobNotFoundError(TroupeError):
    """The head has no job by that submission id."""


class HeadUnavailableError(TroupeError):
    """The head could not be reached, or did not answer in time."""


class JobAlreadyExistsError(TroupeError):
    """The submission id was used before with a different spec."""


class InvalidRequestError(TroupeError):
    """The head refused the request as it stands (a bad argument, a job not finished, a bad package)."""


class PackageError(TroupeError):
    """A working directory could not be packed (too large, not a directory, an unsafe symlink)."""


def from_rpc_error(
    error: grpc.RpcError, address: str, token_source: str, job_id: Optional[str] = None
) -> TroupeError:
    """Turns a gRPC error from the head at `address` into the TroupeError that says what went wrong."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if code == grpc.StatusCode.UNAUTHENTICATED or code == grpc.StatusCode.PERMISSION_DENIED:
        return AuthenticationError(
            f"the head at {address} refused the request: {details}. "
            f"Token used: {token_source}. Tokens are looked up in {TOKEN_LOOKUP}",
            code,
        )
    if code == grpc.StatusCode.NOT_FOUND:
        what = f"no such job: {job_id}" if job_id is not None else "not found"
        return JobNotFoundError(f"{what} ({details})", code)
    if code == grpc.StatusCode.UNAVAILABLE:
        return HeadUnavailableError(f"cannot reach the head at {address}: {details}", code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HeadUnavailableError(f"the head at {address} did not answer in time: {details}", code)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return JobAlreadyExistsError(details, code)
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return InvalidRequestError(details, code)
    name = code.name if code is not None else "an error"
    return TroupeError(f"the head at {address} answered {name}: {details}", code)


class WaitTimeoutError(TroupeError, TimeoutError):
    """A job did not reach the awaited state in time."""
