"""Training engine: data loading, schedule, the loop (single process or torchrun/DDP)."""
