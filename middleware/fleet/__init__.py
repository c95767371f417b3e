"""The fleet: this replica's summaries shipped to shared storage, and read back."""
