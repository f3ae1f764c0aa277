"""Names and records every layer shares; imports nothing else of inspector."""
