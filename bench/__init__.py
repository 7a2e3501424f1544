"""merlin's benchmarks: each scenario beside the limit of this machine measured in the same run."""
