"""Outgoing e-mail through SMTP (``STOREFRONT_SMTP_URL``), or a log line when none is set."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib
import structlog

from service.core.settings import Settings

log = structlog.get_logger("storefront.mail")


def build_message(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> bool:
    """Send one message; returns False (and logs) when no SMTP server is configured."""
    if not settings.smtp_url:
        log.info("mail_not_sent_no_smtp", to=to, subject=subject)
        return False
    url = urlsplit(settings.smtp_url)
    await aiosmtplib.send(
        build_message(settings, to, subject, body),
        hostname=url.hostname or "localhost",
        port=url.port or 25,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        start_tls=False,
        timeout=10,
    )
    log.info("mail_sent", to=to, subject=subject)
    return True


async def send_welcome_email(settings: Settings, to: str, name: str) -> None:
    """Fire-and-forget (a FastAPI background task): a lost welcome mail is not worth a retry."""
    try:
        await send_mail(settings, to, "Welcome to Storefront", f"Hello {name}, welcome aboard!")
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("welcome_mail_failed", to=to, error=str(exc))
