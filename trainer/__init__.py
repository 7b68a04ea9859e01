"""The GPU worker (`python -m trainer`). Kept empty so that the bot can import the torch-free intake modules."""
