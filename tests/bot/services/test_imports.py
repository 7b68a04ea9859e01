"""The services are plain Python: importing them must not pull in discord or torch."""

import subprocess
import sys
from pathlib import Path


def test_importing_the_services_loads_neither_discord_nor_torch():
    code = "import sys, bot.services; print(sorted(m for m in ('discord', 'torch') if m in sys.modules))"
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
