"""merlin beside the pipelines a team would otherwise run."""
