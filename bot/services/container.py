"""The Services container: built once in bot/__main__.py and handed to create_bot() and to the console."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.services.account import AccountService
from bot.services.admin import AdminService
from bot.services.context import ServiceContext
from bot.services.imagine import ImagineService
from bot.services.jobs import JobService
from bot.services.limits import UsageLimits
from bot.services.photos import PhotoService
from bot.services.sharing import SharingService
from bot.services.training import TrainingService
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.settings import Settings
from intake.triggers import validate_trigger


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: AsyncDatabase
    store: FileStore
    limits: UsageLimits
    training: TrainingService
    photos: PhotoService
    imagine: ImagineService
    sharing: SharingService
    account: AccountService
    jobs: JobService
    admin: AdminService

    @classmethod
    def build(
        cls, settings: Settings, db: AsyncDatabase, store: FileStore, *, clock: Callable[[], float] = time.monotonic
    ) -> Services:
        """The only constructor the front ends call. `clock` drives the generation cooldown (tests pass their own)."""
        limits = UsageLimits(settings, clock)
        ctx = ServiceContext(settings=settings, db=db, store=store, limits=limits)
        return cls(
            settings=settings, db=db, store=store, limits=limits,
            training=TrainingService(ctx), photos=PhotoService(ctx), imagine=ImagineService(ctx),
            sharing=SharingService(ctx), account=AccountService(ctx), jobs=JobService(ctx), admin=AdminService(ctx),
        )

    async def warm_up(self) -> None:
        """Load the word-frequency list and the family tokenizer off the event loop, so the first /train or
        /imagine does not pay for it. Optional; call once at start-up."""
        await asyncio.to_thread(validate_trigger, "likeness")
        await self.training.warm_up()
