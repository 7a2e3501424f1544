"""The forwarder: consumes events, projects them, delivers them downstream, under supervision."""
