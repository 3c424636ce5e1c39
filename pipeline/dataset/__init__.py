"""Demonstration datasets in the LeRobot v3 layout, written atomically one episode at a time."""
