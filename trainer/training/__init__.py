"""The training engine the worker calls: `trainer.training.run.train_adapter(TrainConfig, hooks)`.

Kept import-free: `trainer.training.config` is torch-free, everything else loads torch.
"""
