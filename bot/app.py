"""The Discord bot: `create_bot(settings, services)` builds it; `bot/__main__.py` runs it, SimCord tests drive it.

Dependencies come in through the constructor (built once by the entry point). `setup_hook` registers the commands
and the persistent buttons, starts the job watcher, the maintenance sweep and the loop-lag monitor, then syncs the
commands: to each allowed guild, or globally when `settings.sync_commands_globally` is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.commands import register_commands
from bot.delivery import RetryPolicy
from bot.loop_lag import LoopLagMonitor
from bot.progress import JobWatcher
from bot.replies import answer_unexpected, reply
from bot.services import Services
from bot.supervisor import WorkerSupervisor
from bot.views import DYNAMIC_ITEMS
from storage import forget
from storage.settings import Settings

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 30.0
WATCH_INTERVAL_S = 2.0


class LikenessTree(app_commands.CommandTree):
    """Refuses guilds the host did not allow, and turns unexpected errors into one plain sentence."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        allowed = self.client.settings.allowed_guild_ids  # type: ignore[attr-defined]
        if not allowed or interaction.guild_id is None or interaction.guild_id in allowed:
            return True
        if interaction.type is discord.InteractionType.application_command:
            await reply(interaction, "Likeness is not enabled in this server. It still works in DMs; the host can "
                                     "allow this server with LIKENESS_ALLOWED_GUILD_IDS.")
        return False

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if isinstance(error, app_commands.CheckFailure) and not isinstance(error, app_commands.CommandOnCooldown):
            await reply(interaction, "You can't use that command here.")
            return
        await answer_unexpected(interaction, original)


class LikenessBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        services: Services,
        *,
        supervisor: WorkerSupervisor | None = None,
        watch_interval_s: float = WATCH_INTERVAL_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        retry_policy: RetryPolicy | None = None,
        measure_loop_lag: bool = True,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # slash commands only; no message content needed
            intents=discord.Intents.default(),
            tree_cls=LikenessTree,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.settings = settings
        self.services = services
        self.supervisor = supervisor
        self.watcher = JobWatcher(self, interval_s=watch_interval_s, policy=retry_policy)
        self.loop_lag = LoopLagMonitor()
        self._measure_loop_lag = measure_loop_lag
        self.sweeper = tasks.loop(seconds=sweep_interval_s)(self._sweep_forgotten)

    @property
    def db(self):
        return self.services.db

    @property
    def store(self):
        return self.services.store

    async def setup_hook(self) -> None:
        await register_commands(self)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        self.watcher.start()
        self.sweeper.start()
        if self._measure_loop_lag:
            self.loop_lag.start(asyncio.get_running_loop())
        await self.sync_commands()

    async def sync_commands(self) -> dict[str, Any]:
        """Per allowed guild (a copy of the commands), or globally when asked. Returns what was synced."""
        synced: dict[str, Any] = {}
        if self.settings.sync_commands_globally:
            synced["global"] = len(await self.tree.sync())
            return synced
        for guild_id in self.settings.allowed_guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced[str(guild_id)] = len(await self.tree.sync(guild=guild))
        if not synced:
            log.warning("no commands synced: set LIKENESS_ALLOWED_GUILD_IDS (recommended) or "
                        "LIKENESS_SYNC_COMMANDS_GLOBALLY=true")
        log.info("commands synced: %s", synced)
        return synced

    async def _sweep_forgotten(self) -> None:
        """Finish deletions that had to wait for a running job to stop (and any a crash interrupted)."""
        try:
            removed = await self.db.run(forget.sweep_forgotten, self.store)
            if removed:
                log.info("finished forgetting %d user(s)", len(removed))
        except Exception:
            log.exception("the forget sweep failed; it runs again shortly")

    async def close(self) -> None:
        self.watcher.stop()
        self.sweeper.cancel()
        self.loop_lag.stop()
        await super().close()


def create_bot(
    settings: Settings, services: Services, *, supervisor: WorkerSupervisor | None = None, **options: Any
) -> LikenessBot:
    return LikenessBot(settings, services, supervisor=supervisor, **options)
