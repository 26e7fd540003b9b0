"""Workstation side: data, models, training, distillation, evaluation, export.

This package's __init__ imports nothing heavy: `training.data` must import without torch.
"""
