"""Text shown to users, shared by Discord and the console: progress bars, verdicts, subjects, jobs, reports.

Nothing here imports discord. `Style.DISCORD` uses markdown and Discord timestamps (`<t:unix:R>`);
`Style.PLAIN` is for the terminal. Text that came from users goes through `user_text`, which removes invisible
characters and neutralises markdown; the senders also turn mentions off, so user text never pings anyone.
"""

from __future__ import annotations

import enum
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.services.verbs import slash
from intake.formats import size_text

BAR_WIDTH = 16
_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]])")
_MENTION_LIKE = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")

KIND_TITLES = {
    "train": "Training",
    "generate": "Generating",
    "class_images": "Preparing class images",
}
STATE_ICONS = {"queued": "\u23f3", "running": "\u2699\ufe0f", "succeeded": "\u2705", "failed": "\u274c",
               "cancelled": "\u23f9\ufe0f"}


class Style(enum.Enum):
    DISCORD = "discord"
    PLAIN = "plain"


# User text.
def user_text(text: str | None, limit: int = 300, *, style: Style = Style.DISCORD) -> str:
    """Text typed by a user made safe to show: no control or invisible characters, one line, capped; on Discord
    also markdown escaped and mention syntax broken with a zero-width space."""
    raw = unicodedata.normalize("NFC", str(text or ""))
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in raw)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "\u2026"
    if style is Style.PLAIN:
        return cleaned
    cleaned = _MARKDOWN.sub(r"\\\1", cleaned)
    # Mentions are also disabled on every send; escaping keeps them from even looking like one.
    return _MENTION_LIKE.sub(lambda m: m.group(0).replace("@", "@\u200b").replace("<", "<\u200b"), cleaned)


def sentence(text: str | None, limit: int = 600) -> str:
    """A sentence the services or the worker wrote (it may use `code` markdown and quotes user input already made
    safe): control and invisible characters removed, one line, capped. Mentions are off wherever it is sent."""
    return user_text(text, limit, style=Style.PLAIN)


def code(text: str, style: Style) -> str:
    """Inline code on Discord (markdown and mentions are inert inside it); backticks in the text are dropped."""
    return f"`{text.replace('`', '')}`" if style is Style.DISCORD else text


def bold(text: str, style: Style) -> str:
    return f"**{text}**" if style is Style.DISCORD else text


# Progress.
def progress_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """`▰▰▰▰▱▱▱▱ 50%`; an unknown total shows an empty bar."""
    if total <= 0:
        return "\u25b1" * width + "   0%"
    fraction = min(max(step / total, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "\u25b0" * filled + "\u25b1" * (width - filled) + f" {int(fraction * 100):3d}%"


def relative_time(unix: float, style: Style, now: float | None = None) -> str:
    if style is Style.DISCORD:
        return f"<t:{int(unix)}:R>"
    seconds = int(unix - (time.time() if now is None else now))
    if seconds <= 0:
        return "any moment now"
    if seconds < 90:
        return f"in {seconds} s"
    if seconds < 5400:
        return f"in {round(seconds / 60)} min"
    return f"in {seconds / 3600:.1f} h"


def job_title(kind: str, label: str | None, style: Style) -> str:
    title = KIND_TITLES.get(kind, kind)
    return f"{title} {code(label, style)}" if label else title


def job_progress(
    *,
    job_id: int,
    kind: str,
    state: str,
    step: int,
    total: int,
    message: str,
    eta_at: float | None,
    position: int | None,
    label: str | None = None,
    style: Style = Style.DISCORD,
    note: str | None = None,
) -> str:
    """The body of a job's progress message (and of a console progress line when PLAIN)."""
    head = f"{STATE_ICONS.get(state, '')} {bold(job_title(kind, label, style), style)} \u00b7 job #{job_id}".strip()
    lines = [head]
    if state == "queued":
        where = f"position {position} in the queue" if position else "in the queue"
        lines.append(f"Waiting: {where}." + (f" ({sentence(message, 120)})" if message else ""))
    elif state == "running":
        if total > 0:
            lines.append(f"{progress_bar(step, total)} \u00b7 step {step}/{total}")
        lines.append(f"Done {relative_time(eta_at, style)}" if eta_at else "ETA: estimating")
        if message:
            lines.append(sentence(message, 200))
    elif state == "cancelled":
        lines.append("Cancelled.")
    if note:
        lines.append(note)
    return "\n".join(lines)


def eta_text(eta_at: float | None, style: Style, *, step: int = 0, total: int = 0, started_at: float | None = None,
             now: float | None = None) -> str:
    """When a running job should be done: the worker's estimate, else one from the pace so far."""
    now = time.time() if now is None else now
    if not eta_at and started_at and 0 < step < total:
        eta_at = now + (now - started_at) / step * (total - step)
    if not eta_at:
        return "ETA: estimating"
    return f"ETA {relative_time(eta_at, style, now)}"


def progress_line(job_id: int, kind: str, state: str, step: int, total: int, message: str, *,
                  eta_at: float | None = None, started_at: float | None = None, label: str | None = None,
                  now: float | None = None) -> str:
    """One short terminal line for the console: every running job's line carries its ETA."""
    title = KIND_TITLES.get(kind, kind).lower() + (f" {label}" if label else "")
    parts = [f"job #{job_id} {title}: {state}"]
    if total > 0 and state == "running":
        parts.append(f"{progress_bar(step, total, 10)} {step}/{total}")
    if message:
        parts.append(user_text(message, 80, style=Style.PLAIN))
    if state == "running":
        parts.append(eta_text(eta_at, Style.PLAIN, step=step, total=total, started_at=started_at, now=now))
    return " \u00b7 ".join(parts)


# Results.
def _metric_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metric_lines(metrics: Mapping[str, Any] | None, limit: int = 8) -> list[str]:
    """The evaluation's own one-line summary (it names any fallback measure); the raw figures otherwise."""
    if not metrics:
        return []
    if isinstance(metrics.get("error"), str):
        return [sentence(metrics["error"], 300)]
    if isinstance(metrics.get("label"), str):
        return [sentence(metrics["label"], 300)]
    items = [(k, v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return [f"{key.replace('_', ' ')}: {_metric_value(value)}" for key, value in items[:limit]]


def training_done(
    triggers: Sequence[str], class_nouns: Sequence[str], result: Mapping[str, Any], style: Style = Style.DISCORD
) -> str:
    names = ", ".join(code(t, style) for t in triggers) or "your subject"
    bits = [f"adapter v{result.get('version', '?')}"]
    if result.get("steps"):
        bits.append(f"{result['steps']} steps")
    if isinstance(result.get("final_loss"), (int, float)):
        bits.append(f"final loss {result['final_loss']:.4g}")
    example = f"a photo of {triggers[0]} {class_nouns[0]}" if triggers and class_nouns else "a photo of ..."
    lines = [f"\u2705 {names} is trained ({', '.join(bits)}).",
             f"Try {code('/imagine prompt: ' + example, style)}" if style is Style.DISCORD
             else f"Try: imagine \"{example}\""]
    lines += metric_lines(result.get("metrics"))
    return "\n".join(lines)


def generation_done(
    prompt: str, seed: int | None, count: int, warnings: Iterable[str] = (), kind: str = "imagine",
    style: Style = Style.DISCORD,
) -> str:
    what = {"reroll": "Re-roll", "variation": "Variation", "upscale": "Upscale", "headshots": "Headshots",
            "card": "Card"}.get(kind, "Images")
    quoted = user_text(prompt, 400, style=style)
    head = f"{what}: {bold(quoted, style) if quoted else '(no prompt)'}"
    tail = f"seed {seed}" if seed is not None else ""
    lines = [f"{head} \u00b7 {tail}" if tail else head]
    lines += [f"\u26a0\ufe0f {sentence(w, 300)}" for w in warnings]
    return "\n".join(lines)


def job_failed(kind: str, label: str | None, error: str | None, style: Style = Style.DISCORD) -> str:
    reason = sentence(error or "it stopped without a reason.")
    return f"\u274c {job_title(kind, label, style)} failed: {reason}"


def late_note(failures: int) -> str | None:
    if failures <= 0:
        return None
    return "(Delivered late: Discord was not accepting messages for a while.)"


# Service results (plain dataclasses from bot.services.types; typed loosely so this module stays import-light).
def verdict_line(verdict: Any, style: Style = Style.DISCORD) -> str:
    icon = "\u2705" if verdict.accepted else "\u274c"
    lines = [f"{icon} {sentence(verdict.message, 400)}"]
    lines += [f"   \u26a0\ufe0f {sentence(w, 300)}" for w in getattr(verdict, "warnings", ())]
    return "\n".join(lines)


def position_text(position: int | None) -> str:
    if position is None:
        return "finished"
    if position == 0:
        return "running now"
    return "next in line" if position == 1 else f"position {position} in the queue"


def train_outcome(outcome: Any, style: Style = Style.DISCORD) -> str:
    subject = outcome.subject
    lines = [verdict_line(v, style) for v in outcome.verdicts]
    accepted, total = outcome.accepted, len(outcome.verdicts)
    if total:
        lines.append(f"{accepted} of {total} photo(s) accepted.")
    if subject is not None:
        verb = "New subject" if outcome.created else "Subject"
        lines.append(f"{verb} {code(subject.trigger, style)} ({subject.class_noun}), "
                     f"{outcome.photos_total} photo(s) in all.")
        if outcome.trigger_suggested:
            lines.append(f"I picked the trigger {code(subject.trigger, style)} for you; write "
                         f"{code(subject.prompt_name, style)} in prompts.")
    lines += [sentence(note, 400) for note in outcome.notes]
    if outcome.job_id is not None:
        lines.append(f"Training queued as job #{outcome.job_id} ({position_text(outcome.queue_position)}).")
    elif outcome.needs_more:
        lines.append(f"Add {outcome.needs_more} more good photo(s) to start training.")
    return "\n".join(lines)


def photo_list(trigger: str, photos: Sequence[Any], style: Style = Style.DISCORD) -> str:
    if not photos:
        return f"{code(trigger, style)} has no accepted photos."
    lines = [f"Photos of {code(trigger, style)}:"]
    for p in photos:
        size = f"{p.width}x{p.height}" if p.width and p.height else "?"
        caption = f" \u2014 {user_text(p.caption, 120, style=style)}" if p.caption else ""
        lines.append(f"{p.number}. {user_text(p.original_name, 60, style=style)} ({size}){caption}")
    return "\n".join(lines)


def queued_generation(queued: Any, style: Style = Style.DISCORD) -> str:
    what = {"imagine": "Images", "reroll": "Re-roll", "variation": "Variation", "upscale": "Upscale",
            "headshots": "Headshots", "card": "Card"}.get(queued.kind, "Images")
    size = f", {queued.width}x{queued.height}" if queued.width and queued.height else ""
    lines = [f"{what} queued as job #{queued.job_id} ({position_text(queued.position)}): "
             f"{queued.count} image(s){size}, seed {queued.seed}."]
    if queued.subjects:
        lines.append("Using " + ", ".join(code(t, style) for t in queued.subjects) + ".")
    lines += [f"\u26a0\ufe0f {sentence(w, 300)}" for w in queued.warnings]
    if style is Style.DISCORD:
        lines.append("The images will appear in this channel.")
    return "\n".join(lines)


def _subject_line(info: Any, style: Style) -> str:
    bits = [info.state]
    if info.adapter_version:
        bits.append(f"v{info.adapter_version}")
    if info.photos is not None:
        bits.append(f"{info.photos} photo(s)")
    if info.group:
        bits.append(f"family {user_text(info.group, 40, style=style)}")
    shares = len(info.shared_with_users) + len(info.shared_with_guilds)
    if info.mine and shares:
        bits.append(f"shared {shares}x")
    head = f"\u2022 {code(info.trigger, style)} {info.class_noun} ({user_text(info.display_name, 40, style=style)})"
    line = f"{head}: {', '.join(bits)}"
    extra = metric_lines(info.metrics, 3)
    return line + ("\n   " + "; ".join(extra) if extra else "")


def subjects_view(view: Any, style: Style = Style.DISCORD) -> str:
    lines = [bold("Your subjects", style)]
    lines += [_subject_line(s, style) for s in view.mine] or ["(none yet: /train to make one)"
                                                               if style is Style.DISCORD else "(none yet)"]
    lines.append(bold("Shared with you", style))
    lines += [_subject_line(s, style) for s in view.shared] or ["(none)"]
    return "\n".join(lines)


def jobs_view(views: Sequence[Any], style: Style = Style.DISCORD, *, with_owner: bool = False) -> str:
    if not views:
        return "No jobs right now."
    lines = []
    for job in views:
        label = ", ".join(job.triggers) or None
        line = f"#{job.job_id} {job_title(job.kind, label, style)}: {job.state}"
        if job.state in ("queued", "running"):
            line += f" ({position_text(job.position)})"
        if job.state == "running" and job.total:
            line += f" {progress_bar(job.step, job.total, 10)} {job.step}/{job.total}"
            if job.eta_at and not getattr(job, "stalled", False):
                line += f", done {relative_time(job.eta_at, style)}"
        if getattr(job, "stalled", False):
            line += ": stalled, restarting from its last checkpoint"
        if getattr(job, "node", None):
            line += f" on node {job.node}"
        if job.cancel_requested:
            line += " (cancelling)"
        if job.error:
            line += f": {sentence(job.error, 300)}"
        if with_owner and job.user_id:
            line += f" \u2014 user {job.user_id}"
        lines.append(line)
    return "\n".join(lines)


def cluster_view(nodes: Any | None, style: Style = Style.DISCORD) -> str:
    """Cluster mode: the nodes and their latest joins and leaves, as lines to add to /admin queue; "" otherwise."""
    if nodes is None:
        return ""
    listed = ", ".join(f"{node.label} ({node.gpus:g} GPU)" for node in nodes.nodes) or "none yet"
    lines = [f"Cluster nodes: {listed}."]
    lines += [f"Node {change.node} {change.event} {relative_time(change.at, style)}." for change in nodes.changes[-3:]]
    return "\n".join(lines)


def cancel_outcome(outcome: Any) -> str:
    steps = getattr(outcome, "steps_done", 0)
    label = getattr(outcome, "label", None)
    job = f"job #{outcome.job_id}" + (f" ({KIND_TITLES.get(outcome.kind, outcome.kind).lower()} {sentence(label, 80)})"
                                      if label else "")
    if outcome.result == "cancelled" and steps:
        return f"Cancelled {job}; it had done {steps} step(s) and was waiting to resume, so that work is dropped."
    if outcome.result == "cancelled":
        return f"Cancelled {job}; it had not started."
    return f"Stopping {job}; it ends within one step."


def _person(user_id: int, style: Style) -> str:
    return f"<@{user_id}>" if style is Style.DISCORD else f"user {user_id}"


def _still_shared(outcome: Any, style: Style) -> list[str]:
    """After an unshare: what access remains, and why (the owner always keeps theirs)."""
    trigger, lines = outcome.trigger, []
    here = outcome.here_guild in outcome.still_guilds
    others = len([g for g in outcome.still_guilds if g != outcome.here_guild])
    if outcome.user_id is not None and here:
        lines.append(f"They can still use it here, because you shared it with everyone in this server; "
                     f"{code(slash('unshare-server', subject=trigger), style)} takes that back.")
    if outcome.user_id is not None and others:
        lines.append(f"It is also still shared with everyone in {others} other server(s), which they may be in.")
    if outcome.still_users:
        people = ", ".join(_person(user, style) for user in outcome.still_users)
        undo = (code(f"unshare {trigger} --user {outcome.still_users[0]}", style) if style is Style.PLAIN
                else f"{code('/unshare', style)} with that person")
        lines.append(f"Still shared with {people} directly, so they keep using it; {undo} takes one back.")
    if outcome.guild_id is not None and others:
        lines.append(f"It is still shared with everyone in {others} other server(s).")
    return lines


def share_outcome(outcome: Any, *, unshare: bool, style: Style = Style.DISCORD) -> str:
    who = _person(outcome.user_id, style) if outcome.user_id is not None else "everyone in this server"
    trigger = code(outcome.trigger, style)
    if unshare:
        if not outcome.changed:
            return f"{trigger} was not shared with {who}."
        if outcome.user_id is not None and outcome.here_guild in outcome.still_guilds:
            head = f"{who} no longer has a share of their own for {trigger}."
        elif outcome.user_id is not None:
            head = f"{who} can no longer use {trigger}."
        else:
            head = f"Everyone in this server can no longer use {trigger} through the server's share."
        return "\n".join([head, *_still_shared(outcome, style)])
    return f"{who} can now use {trigger}." if outcome.changed else f"{trigger} was already shared with {who}."


def export_bundle(bundle: Any, *, sent_to: str | None = None, style: Style = Style.DISCORD) -> str:
    head = f"Export of {code(bundle.trigger, style)} v{bundle.version}: {bundle.filename} ({size_text(bundle.size)}, " \
           f"{len(bundle.files)} file(s))"
    if sent_to:
        return f"{head}, {sent_to}."
    return head + "."


def forget_outcome(outcome: Any) -> str:
    if outcome.nothing_stored:
        return "I had nothing stored about you."
    counts = (f"{outcome.subjects} subject(s), {outcome.photos} photo(s), {outcome.adapters} adapter(s), "
              f"{outcome.generations} generation(s) and {outcome.grants} share(s)")
    text = f"Deleted {counts}."
    if outcome.jobs_stopped:
        text += f" Stopped {outcome.jobs_stopped} job(s)."
    if outcome.finishing:
        text += " A running job is stopping; its files are removed as soon as it does."
    return text


def styles_list(styles: Sequence[Any], style: Style = Style.DISCORD) -> str:
    if not styles:
        return "No styles installed."
    return "\n".join(f"\u2022 {code(s.name, style)} ({s.family}, weight {s.weight:g})" for s in styles)


def limits_view(limits: Any) -> str:
    lines = [
        f"Photos per subject: {limits.min_photos_per_subject} to {limits.max_photos_per_subject}; "
        f"files up to {limits.max_upload_bytes // (1024 * 1024)} MiB.",
        f"Training jobs at a time: {limits.max_training_jobs_per_user} (you: {limits.active_training_jobs}).",
        f"Queued generations: {limits.max_queued_generations_per_user} (you: {limits.queued_generations}); "
        f"cooldown {limits.generation_cooldown_s:g} s"
        + (f" ({limits.cooldown_left_s:.0f} s left)." if limits.cooldown_left_s > 0 else "."),
        f"Prompts up to {limits.prompt_max_chars} characters; {limits.blocklist_size} blocked word(s).",
    ]
    if limits.is_admin:
        lines.append("You are an admin: the per-user limits do not apply to you.")
    return "\n".join(lines)
