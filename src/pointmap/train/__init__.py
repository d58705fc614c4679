"""Training: losses, data pipelines, the synthetic multi-view data engine and the trainer.

Nothing here is needed at inference time.
"""
