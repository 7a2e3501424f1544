"""merlin's composition root and operator tooling: settings, CLI, local infrastructure."""
