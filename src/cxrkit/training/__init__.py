"""Training: ``fit(RunConfig) -> run folder``; losses, augmentation, checkpoints, DDP, experiment grids."""
