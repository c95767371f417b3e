"""Model quality from ground truth: labels, predictions joined, metrics, changes."""
