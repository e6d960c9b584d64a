"""Bridges from forklab to training engines that scale past one machine.

``forklab.integrations.trl``: any forklab ``Recipe`` as the loss of TRL's ``GRPOTrainer`` (accelerate,
DeepSpeed/FSDP, vLLM generation). Imported explicitly, since it needs TRL installed.
"""
