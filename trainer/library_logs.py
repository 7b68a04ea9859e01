"""diffusers and transformers print through handlers of their own and stop propagation; route them to ours, so
their notices land in the host's log like every other record (and never in the console's prompt)."""

from __future__ import annotations

import diffusers.utils.logging as diffusers_logging
import transformers.utils.logging as transformers_logging


def route_model_library_logs() -> None:
    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.set_verbosity_warning()  # whatever an earlier caller in this process chose, notices reach the log
