"""Data: COCO sets, the synthetic lamp-inspection generator, augmentation, student noise.

numpy + OpenCV only; never imports torch (a test proves it).
"""
