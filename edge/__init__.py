"""Edge runtime: runs on the Jetson with numpy, OpenCV and gpiozero only (no torch).

Python 3.8+ (JetPack 5): keep annotations postponed and the standard library 3.8-safe.
"""
