"""Which job failures are worth another attempt."""

from __future__ import annotations

from collections.abc import Callable

import aiosmtplib
import pydantic


class PermanentJobError(Exception):
    """Retrying cannot help (the order is gone, the image is missing): dead-letter at once."""


# Failures that a later attempt would repeat exactly.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PermanentJobError,
    TypeError,  # the message's arguments do not fit the actor
    pydantic.ValidationError,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPSenderRefused,
)


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` should go straight to the dead-letter queue."""
    if isinstance(exc, PERMANENT_ERRORS):
        return True
    # An SMTP 5xx reply is a refusal; 4xx is "try again later".
    code = getattr(exc, "code", None)
    return (
        isinstance(exc, aiosmtplib.SMTPResponseException) and isinstance(code, int) and code >= 500
    )


def retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    """Dramatiq's ``retry_when`` for an actor: transient failures, at most ``max_retries``."""

    def should_retry(retries: int, exc: BaseException) -> bool:
        return retries < max_retries and not is_permanent(exc)

    return should_retry
