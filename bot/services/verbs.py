"""Commands as each front end names them, in one table, so the two can never drift apart.

Services write their hints in the Discord form (`slash("retrain", subject="rraj")` -> "/train subject:rraj"), which
Discord shows as is. The console passes every line it prints through `for_console`, which rewrites each Discord
form in this table into the console's own verb ("train --subject rraj").
"""

from __future__ import annotations

import re
from functools import cache

# key -> (Discord form, console form). `{name}` marks a value, filled in by `slash`/`console` and carried across.
COMMANDS: dict[str, tuple[str, str]] = {
    "retrain": ("/train subject:{subject}", "train --subject {subject}"),
    "train-family": ("/train-family", "train-family"),
    "train": ("/train", "train"),
    "photos add": ("/photos add", "photos add"),
    "photos list": ("/photos list", "photos list"),
    "photos remove": ("/photos remove", "photos remove"),
    "photos caption": ("/photos caption", "photos caption"),
    "imagine": ("/imagine", "imagine"),
    "headshots": ("/headshots", "headshots"),
    "card": ("/card", "card"),
    "share": ("/share", "share"),
    "unshare-server": ("/unshare subject:{subject} server:True", "unshare {subject} --server"),
    "unshare": ("/unshare", "unshare"),
    "subjects": ("/subjects", "subjects"),
    "status": ("/status", "status"),
    "cancel-job": ("/cancel job:{job}", "cancel {job}"),
    "cancel": ("/cancel", "cancel"),
    "export": ("/export", "export"),
    "forget": ("/forget", "forget --yes"),
    "admin": ("/admin", "admin"),
}
_FIELD = re.compile(r"\{(\w+)\}")


def slash(key: str, **values: object) -> str:
    """The Discord form of a command, e.g. `slash("retrain", subject="rraj")` -> "/train subject:rraj"."""
    return COMMANDS[key][0].format(**values)


def console(key: str, **values: object) -> str:
    """The console form of the same command, e.g. "train --subject rraj"."""
    return COMMANDS[key][1].format(**values)


@cache
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    patterns = []
    # Longest Discord form first, so "/train subject:x" and "/train-family" win over "/train".
    for discord_form, console_form in sorted(COMMANDS.values(), key=lambda pair: -len(pair[0])):
        parts = _FIELD.split(discord_form)  # literal, name, literal, name, ...
        regex = "".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^\\s`'\",;:()]+)"
                        for index, part in enumerate(parts))
        patterns.append((re.compile(r"(?<![\w/])" + regex + r"(?![\w/-])"), console_form))
    return patterns


def for_console(text: str) -> str:
    """Every Discord command named in `text`, rewritten into the console's verb for it."""
    if "/" not in text:
        return text
    for pattern, console_form in _patterns():
        text = pattern.sub(lambda match, form=console_form: form.format(**match.groupdict()), text)
    return text
