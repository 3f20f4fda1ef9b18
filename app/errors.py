"""One exception root. Each error carries an HTTP status and a machine-readable code."""

from __future__ import annotations


class MixlabError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class InvalidInput(MixlabError):
    status = 422
    code = "invalid_input"


class NotFound(MixlabError):
    status = 404
    code = "not_found"


class Conflict(MixlabError):
    status = 409
    code = "conflict"


class TooLarge(MixlabError):
    status = 413
    code = "upload_too_large"


class UnsupportedMediaType(MixlabError):
    status = 415
    code = "unsupported_media_type"


class Forbidden(MixlabError):
    status = 403
    code = "forbidden"


class Unauthorized(MixlabError):
    status = 401
    code = "unauthorized"


class NotReady(Conflict):
    """Nothing to hand out right now; try again after ``retry_after`` seconds."""

    code = "not_ready"

    def __init__(self, message: str, *, retry_after: float = 5.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
