"""How merlin calls downstream endpoints: their definitions, signed and retried calls, dead-letter records."""
