"""The run folder: its file names (``files``), checkpoints, data, package (model.json) and the model."""
