"""The GPU worker (`python -m trainer`): the only process that loads models."""
