"""Evaluation of trained adapters: drift of prompts without the trigger, subject fidelity, prompt fidelity, and
the training plot. The entry point is `trainer.evaluation.evaluate.evaluate_adapter`; the train job calls it
through `trainer.evaluation.job.evaluate_stored_adapter`. Importing this package imports nothing heavy.
"""
