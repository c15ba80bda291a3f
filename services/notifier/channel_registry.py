"""The channels the notifier can deliver on, built from the settings."""

from __future__ import annotations

import aiohttp

from services.notifier.channels.base import Channel
from services.notifier.channels.email import EmailChannel
from services.notifier.channels.http import MatrixChannel, SlackAppChannel, WebhookChannel
from services.notifier.channels.outbound import OutboundPolicy, guarded_session
from services.notifier.smtp import SmtpSender
from shared.events import WEBHOOK_CHANNELS, ChannelType
from shared.settings import Settings


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """Created inside the running event loop. Every address it connects to is checked when
    connecting (channels/outbound.py), and channels never follow redirects: a redirect could
    lead anywhere, past the allowed hosts."""
    return guarded_session(OutboundPolicy.from_settings(settings), settings.webhook_timeout_seconds)


def build_channels(
    settings: Settings, session: aiohttp.ClientSession, smtp: SmtpSender
) -> dict[ChannelType, Channel]:
    """`session` must come from `http_session` (the HTTP channels refuse any other)."""
    # Generic webhooks are signed with a secret per destination derived from this key, never
    # with a link key; without it they fail permanently (channels/webhook_signing.py).
    signing_key = settings.webhook_signing_key.get_secret_value().encode()
    channels: dict[ChannelType, Channel] = {
        ChannelType.EMAIL: EmailChannel(smtp, settings.smtp_from),
        ChannelType.SLACK: SlackAppChannel(
            session,
            settings.slack_api_url,
            settings.slack_bot_token.get_secret_value(),
            # Buttons only where a click can be verified (POST /slack/interactivity).
            buttons=bool(settings.slack_signing_secret.get_secret_value()),
        ),
        ChannelType.MATRIX: MatrixChannel(
            session, settings.matrix_homeserver_url, settings.matrix_access_token.get_secret_value()
        ),
    }
    for kind in WEBHOOK_CHANNELS:
        channels[kind] = WebhookChannel(session, kind, settings.allowed_webhook_hosts, signing_key)
    return channels
