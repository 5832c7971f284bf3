"""facerec backup and facerec restore: the CLI on real SQLite files, and a backup taken under a real server."""
