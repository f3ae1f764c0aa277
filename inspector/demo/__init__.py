"""The embedded demo: a synthetic production line, its gallery, and the daemon or offline scoring on it."""
