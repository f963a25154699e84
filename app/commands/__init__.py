"""Command-line subcommands that compose several core packages (ask, serve-api, builtin)."""
