"""Slack: Block Kit messages through one shared ``AsyncWebClient``.

* :mod:`~notifiers.slack.blocks` (pure): :func:`compose_slack`, mrkdwn escaping and
  chunking within Slack's limits;
* :mod:`~notifiers.slack.client`: :class:`SlackNotifier`, the client, pacing and errors.
"""

from notifiers.slack.blocks import (
    BLOCKS_MAX,
    SECTION_MAX,
    SlackMessage,
    chunk_mrkdwn,
    compose_slack,
    escape_mrkdwn,
)
from notifiers.slack.client import SlackNotifier

__all__ = [
    "BLOCKS_MAX",
    "SECTION_MAX",
    "SlackMessage",
    "SlackNotifier",
    "chunk_mrkdwn",
    "compose_slack",
    "escape_mrkdwn",
]
