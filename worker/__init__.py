"""Job execution: RQ job functions and the generator cache that holds TorchScript styles in memory."""
