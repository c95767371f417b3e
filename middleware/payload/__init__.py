"""What a captured exchange holds, and how its bodies read as feature rows."""
