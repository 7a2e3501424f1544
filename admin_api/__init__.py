"""The admin API: operators' controls over the forwarder's endpoints, on its own listener."""
