"""Image generation in the worker: one resident base pipeline per family, per-user LoRA adapters swapped in and out.

    server = GenerationServer(settings)             # worker.resources["generation"]
    runtime = server.runtime("tiny-sd15")          # loads the base pipeline once
    runtime.use_adapters([(source, 1.0)])          # AdapterCache: tensors in memory, copied into LoRA slots
    image = runtime.text2img(Sampling(...))

`trainer.serving.job.run_generation_job` is the worker's handler for `generate` jobs. Importing this package is
cheap; the submodules import torch and diffusers.
"""
