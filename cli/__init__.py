"""Every console script (`pipeline`, `training`, `serving`, `validation`, `monitoring`,
`replay`): argument parsing, the settings from the environment, and the exit codes."""
