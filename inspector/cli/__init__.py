"""The ``inspector`` command line: one module per group of subcommands, ``main`` the entry point."""
