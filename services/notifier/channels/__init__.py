"""Delivery channels: each turns a rendered message into one provider request and classifies
the answer as sent, permanent failure or transient failure (with the provider's Retry-After)."""
