"""What the rest of the bot package uses of the running bot; `bot.app.LikenessBot` provides it.

Commands, views and the job watcher name their bot by these protocols rather than by `LikenessBot`, because
`bot.app` imports them to register them: this module sits below all of them, so there is no import cycle.
"""

from __future__ import annotations

from typing import Protocol

import discord

from bot.loop_lag import LoopLagMonitor
from bot.services import Services
from bot.supervisor import WorkerSupervisor
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.settings import Settings


class MessagingClient(Protocol):
    """The bot as the job watcher sees it: settings, storage, and Discord's channel and user look-ups."""

    settings: Settings

    @property
    def db(self) -> AsyncDatabase: ...

    @property
    def store(self) -> FileStore: ...

    def get_partial_messageable(self, id: int, /) -> discord.PartialMessageable: ...

    def get_user(self, id: int, /) -> discord.User | None: ...

    async def fetch_user(self, user_id: int, /) -> discord.User: ...


class JobReporter(Protocol):
    async def report(self, job_id: int, *, force: bool = False) -> None:
        """Bring one job's channel message up to date now."""


class LikenessClient(MessagingClient, Protocol):
    """The bot as commands and views see it: the services, the worker supervisor and the job watcher."""

    services: Services
    supervisor: WorkerSupervisor | None
    loop_lag: LoopLagMonitor
    watcher: JobReporter
