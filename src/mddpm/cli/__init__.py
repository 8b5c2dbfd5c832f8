"""The ``mddpm`` command line: one module per subcommand, each a thin wrapper over an API function."""
