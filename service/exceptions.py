"""Domain errors raised below the routes; ``service.problems`` maps each to an HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``code`` is the stable machine-readable name, ``status`` the HTTP status."""

    code = "error"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsupportedImage(ServiceError):
    code, status, title = "unsupported_media_type", 415, "Unsupported image"


class CorruptImage(ServiceError):
    code, status, title = "corrupt_image", 400, "Corrupt image"


class ImageTooLarge(ServiceError):
    code, status, title = "image_too_large", 413, "Image too large"


class UploadTooLarge(ServiceError):
    code, status, title = "upload_too_large", 413, "Upload too large"


class StyleUnknown(ServiceError):
    code, status, title = "style_not_found", 404, "Unknown style"


class StyleUnavailable(ServiceError):
    """The style exists but its files cannot be read here (damaged manifest or artifact)."""

    code, status, title = "style_unavailable", 503, "Style unavailable"


class JobNotFound(ServiceError):
    code, status, title = "job_not_found", 404, "Unknown job"


class ResultNotReady(ServiceError):
    code, status, title = "result_not_ready", 409, "Result not ready"


class NoResult(ServiceError):
    """The job ended failed or canceled: its result will never exist (the detail says why)."""

    code, status, title = "no_result", 409, "Job ended without a result"


class NoSuchImage(ServiceError):
    """The image asked for is not one this kind of job makes (a training job's ``/result``, a
    stylize job's ``/preview``)."""

    code, status, title = "no_such_image", 404, "No such image for this job"


class ResultExpired(ServiceError):
    code, status, title = "result_expired", 410, "Result expired"


class QueueFull(ServiceError):
    code, status, title = "queue_full", 429, "Too many queued jobs"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class InvalidField(ServiceError):
    """One or more fields refused by the service's own checks; ``errors`` lists them as
    ``{field, message}``, the shape of FastAPI's own 422s (``service.problems``)."""

    code, status, title = "invalid_field", 422, "Invalid field"

    def __init__(self, *errors: tuple[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = [{"field": field, "message": message} for field, message in errors]


class JobNotCancelable(ServiceError):
    code, status, title = "job_not_cancelable", 409, "Job cannot be canceled"


class Unauthorized(ServiceError):
    code, status, title = "unauthorized", 401, "API key required"


class Forbidden(ServiceError):
    code, status, title = "forbidden", 403, "API key not accepted"


class StyleExists(ServiceError):
    code, status, title = "style_exists", 409, "Style exists"


class StyleReadOnlyError(ServiceError):
    code, status, title = "style_read_only", 409, "Style is read-only"


class PreviewNotReady(ServiceError):
    code, status, title = "preview_not_ready", 404, "No preview yet"
