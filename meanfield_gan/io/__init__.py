"""Files: run configurations (TOML), H5MD run files, and the ``meanfield-gan run`` command."""
