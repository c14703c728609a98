"""Studies of the package: each module is one ``meanfield-gan`` subcommand."""
