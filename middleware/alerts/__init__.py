"""Alerts: rules read from the reports, messages, channels and their delivery."""
