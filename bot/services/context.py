"""What every service shares: the settings, the database, the file store and the usage limits."""

from __future__ import annotations

from dataclasses import dataclass

from bot.services.limits import UsageLimits
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.settings import Settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    db: AsyncDatabase
    store: FileStore
    limits: UsageLimits

    @property
    def family(self) -> str:
        return self.settings.model_family

    def is_admin(self, user_id: int) -> bool:
        return self.settings.is_admin(user_id)
