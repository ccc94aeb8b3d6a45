"""The long-lived objects of a running process, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from gridgate.operators.services import TokenIssuer
from gridgate.settings import Settings
from gridgate.storage.crypto import SecretBox
from gridgate.storage.db import Database

__all__ = ["Runtime"]


@dataclass(slots=True)
class Runtime:
    """What every role's routes and background tasks are handed: settings and stores."""

    settings: Settings
    db: Database
    box: SecretBox
    operator_tokens: TokenIssuer

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Wire the stores the settings name (keys must already be resolved)."""
        return cls(
            settings=settings,
            db=Database(settings.effective_database_url),
            box=SecretBox(settings.data_keys),
            operator_tokens=TokenIssuer(settings.signing_key, settings.operator_token_ttl_s),
        )

    async def close(self) -> None:
        """Release connections."""
        await self.db.dispose()
