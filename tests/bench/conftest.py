"""Bench entry points set process-wide state (torch's thread count, the model libraries' verbosity) as a bench run
should; under pytest that state would leak into later tests, where a changed thread count changes float results."""

import pytest


@pytest.fixture(autouse=True)
def restore_process_state():
    import diffusers.utils.logging as diffusers_logging
    import torch

    threads, verbosity = torch.get_num_threads(), diffusers_logging.get_verbosity()
    yield
    torch.set_num_threads(threads)
    diffusers_logging.set_verbosity(verbosity)
