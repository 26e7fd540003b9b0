"""gpiozero pin factories of our own (the Jetson one: no public one exists)."""
