"""The baseline: what the training data looked like, how it is built, its windows."""
