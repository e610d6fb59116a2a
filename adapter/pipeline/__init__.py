"""Intake (broker -> store), dispatch (store -> destinations), and the loop that runs both."""
