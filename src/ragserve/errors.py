"""The error tree of ragserve. Services raise these; ``api/errors.py`` alone maps them to HTTP.

RagserveError
├── InvalidRequestError            400  bad input the client can fix
│   ├── EmptyQueryError            400
│   └── InvalidEncodingError       400
├── AuthenticationError            401  missing, unknown, expired or revoked credentials
├── PermissionDeniedError          403  a key or token without the scope the operation needs
├── PayloadTooLargeError           413  query, document count or upload over a limit
├── UnsupportedMediaTypeError      415  file type no loader handles
├── NotFoundError                  404  unknown collection, document or job
├── ConflictError                  409  idempotency key reused with another request, a refused promotion
│   └── IndexVersionsChangedError  (internal: an index version appeared during a document write)
├── DocumentParseError             (per file, recorded in its job)
│   ├── BinaryContentError         a text file that holds binary data (a renamed image or executable)
│   ├── ParserCrashedError         the isolated parser process died on the file
│   └── ParseLimitError            a file over a parsing limit (``ParsingSettings``)
│       ├── ArchiveLimitError      a .docx whose zip would inflate too far (a zip bomb)
│       ├── NestingLimitError      HTML nested deeper than the limit
│       ├── PageLimitError         a PDF with more pages than the limit
│       ├── TextLimitError         more extracted text than the limit
│       ├── ParseTimeoutError      parsing one file took longer than the limit
│       └── ParseMemoryError       parsing one file needed more memory than the limit
├── EmbeddingError                 (model failed to load or run)
│   └── EmbeddingModelMismatchError  the data holds vectors of another model id (e.g. embedding.precision changed)
├── StoreError                     (storage backend failed)
│   └── DataDirLockedError         another process holds the data directory
├── RateLimitedError               429  a key's or client IP's request rate over its limit (Retry-After)
│   └── QuotaExceededError         429  a tenant over a daily quota (Retry-After: the next UTC day)
├── ServiceUnavailableError        503  not ready yet
├── RateLimitBackendError          (the limiter's Redis failed; checks then let requests through)
└── LLMError                       (a language model provider failed; the gateway falls back, never a 5xx)
    ├── LLMRetryableError          worth another try at the same provider
    │   ├── LLMConnectionError     refused, reset, or cut mid-stream
    │   ├── LLMTimeoutError        connect, first-token or total timeout
    │   ├── LLMRateLimitedError    429, with ``retry_after_seconds`` when the provider said
    │   └── LLMServerError         5xx or a malformed response
    ├── LLMRequestError            4xx other than 429: a retry would fail the same way
    ├── LLMCircuitOpenError        the provider's breaker is open, or its egress limit is full
    ├── LLMStreamInterruptedError  a stream failed after text was already passed on
    └── LLMUnavailableError        every provider failed, or the answer's deadline passed
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


class AuthenticationError(RagserveError):
    """No credentials, or credentials that are not valid (unknown, expired or revoked key; bad token)."""

    code = "unauthorized"


class PermissionDeniedError(RagserveError):
    """Valid credentials without the scope, or the document permission, that the operation needs."""

    code = "forbidden"


class PayloadTooLargeError(RagserveError):
    code = "payload_too_large"


class UnsupportedMediaTypeError(RagserveError):
    code = "unsupported_media_type"


class NotFoundError(RagserveError):
    code = "not_found"


class ConflictError(RagserveError):
    code = "conflict"


class IndexVersionsChangedError(ConflictError):
    """A document write named other index versions than the collection now has (one was created or removed
    meanwhile): chunk it again for the current ones."""

    code = "index_versions_changed"


class DocumentParseError(RagserveError):
    code = "parse_error"


class BinaryContentError(DocumentParseError):
    """A .txt, .md or .json file whose bytes are binary: a known file signature, NUL bytes, or mostly not UTF-8."""

    code = "binary_content"


class ParserCrashedError(DocumentParseError):
    """The parser process died on the file (a crash in a parsing library, or its memory limit hit in C code)."""

    code = "parser_crashed"


class ParseLimitError(DocumentParseError):
    """A file over one of the parsing limits; the message names the file and the limit."""

    code = "parse_limit_exceeded"


class ArchiveLimitError(ParseLimitError):
    code = "archive_too_large"


class NestingLimitError(ParseLimitError):
    code = "nesting_too_deep"


class PageLimitError(ParseLimitError):
    code = "too_many_pages"


class TextLimitError(ParseLimitError):
    code = "text_too_large"


class ParseTimeoutError(ParseLimitError):
    code = "parse_timeout"


class ParseMemoryError(ParseLimitError):
    code = "parse_memory_exceeded"


class EmbeddingError(RagserveError):
    code = "embedding_error"


class EmbeddingModelMismatchError(EmbeddingError):
    code = "embedding_model_mismatch"


class StoreError(RagserveError):
    code = "store_error"


class DataDirLockedError(StoreError):
    code = "data_dir_locked"


class RateLimitedError(RagserveError):
    """Too many requests. ``retry_after_seconds`` (whole seconds, at least 1) is when a retry can succeed;
    None when no wait helps (a storage quota frees up only when documents are deleted)."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int | None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class QuotaExceededError(RateLimitedError):
    """A tenant is over one of its quotas; ``quota`` names it (``requests``, ``llm_tokens``, ...)."""

    code = "quota_exceeded"

    def __init__(self, message: str, quota: str, retry_after_seconds: int | None) -> None:
        super().__init__(message, retry_after_seconds)
        self.quota = quota


class ServiceUnavailableError(RagserveError):
    code = "service_unavailable"


class RateLimitBackendError(RagserveError):
    code = "rate_limit_backend_error"


class LLMError(RagserveError):
    code = "llm_error"


class LLMRetryableError(LLMError):
    code = "llm_retryable"


class LLMConnectionError(LLMRetryableError):
    code = "llm_connection"


class LLMTimeoutError(LLMRetryableError):
    code = "llm_timeout"


class LLMRateLimitedError(LLMRetryableError):
    code = "llm_rate_limited"

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class LLMServerError(LLMRetryableError):
    code = "llm_server_error"


class LLMRequestError(LLMError):
    code = "llm_request_error"


class LLMCircuitOpenError(LLMError):
    code = "llm_circuit_open"


class LLMStreamInterruptedError(LLMError):
    code = "llm_stream_interrupted"


class LLMUnavailableError(LLMError):
    code = "llm_unavailable"
