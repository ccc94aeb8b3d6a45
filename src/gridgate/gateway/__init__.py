"""Unified service entry (统一服务入口): the channel-facing request path (R2, R11, R12)."""
