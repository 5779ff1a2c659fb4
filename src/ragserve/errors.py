"""The error tree of ragserve. Services raise these; ``api/errors.py`` alone maps them to HTTP.

RagserveError
├── InvalidRequestError            400  bad input the client can fix
│   ├── EmptyQueryError            400
│   └── InvalidEncodingError       400
├── PayloadTooLargeError           413  query, document count or upload over a limit
├── UnsupportedMediaTypeError      415  file type no loader handles
├── NotFoundError                  404  unknown collection, document or job
├── ConflictError                  409  idempotency key reused with another request
├── DocumentParseError             (per file, recorded in its job)
├── EmbeddingError                 (model failed to load or run)
├── StoreError                     (storage backend failed)
│   └── DataDirLockedError         another process holds the data directory
└── ServiceUnavailableError        503  not ready yet
"""

from __future__ import annotations


class RagserveError(Exception):
    """Base of every error ragserve raises on purpose. ``code`` is a stable machine-readable name."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(RagserveError):
    code = "invalid_request"


class EmptyQueryError(InvalidRequestError):
    code = "empty_query"


class InvalidEncodingError(InvalidRequestError):
    code = "invalid_encoding"


class PayloadTooLargeError(RagserveError):
    code = "payload_too_large"


class UnsupportedMediaTypeError(RagserveError):
    code = "unsupported_media_type"


class NotFoundError(RagserveError):
    code = "not_found"


class ConflictError(RagserveError):
    code = "conflict"


class DocumentParseError(RagserveError):
    code = "parse_error"


class EmbeddingError(RagserveError):
    code = "embedding_error"


class StoreError(RagserveError):
    code = "store_error"


class DataDirLockedError(StoreError):
    code = "data_dir_locked"


class ServiceUnavailableError(RagserveError):
    code = "service_unavailable"
