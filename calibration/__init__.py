"""INT8 calibration, the accuracy metrics shared by every evaluation path (no torch)."""
