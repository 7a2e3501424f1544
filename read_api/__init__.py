"""The read API: queries over the read store that the forwarder projects."""
