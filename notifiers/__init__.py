"""Notifiers: one per channel (email, Slack, webhook) plus the dev outbox."""
