"""Email: compose a multipart message from the templates and send it over pooled SMTP.

* :mod:`~notifiers.email.compose` (pure): bodies rendered once per event, headers, MIME
  and the wire bytes;
* :mod:`~notifiers.email.headers`: untrusted strings made safe for a header, the policy
  that keeps ``List-*`` headers unencoded;
* :mod:`~notifiers.email.smtp`: :class:`EmailNotifier`, the SMTP connection pool.
"""

from notifiers.email.compose import (
    FOOTER_SLOT,
    EmailParts,
    compose_email,
    email_parts,
    event_context,
    render_bodies,
    wire_bytes,
)
from notifiers.email.headers import POLICY, header_text, subject_line
from notifiers.email.smtp import EmailNotifier

__all__ = [
    "FOOTER_SLOT",
    "POLICY",
    "EmailNotifier",
    "EmailParts",
    "compose_email",
    "email_parts",
    "event_context",
    "header_text",
    "render_bodies",
    "subject_line",
    "wire_bytes",
]
