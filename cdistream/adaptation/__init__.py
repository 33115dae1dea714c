"""The networks adapted to the sample in front of the beam."""
