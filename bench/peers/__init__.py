"""merlin beside the pipelines a team would otherwise run on Kafka Connect, and its live rooms beside
Centrifugo (``python -m bench --peers``).

- ``jars``: the worker and its plugins, fetched with Maven once into the cache (poms in ``maven/``);
- ``worker``: one distributed Connect worker and its REST API (its logging in ``worker/``);
- ``events``: the events both sides read, as merlin writes them and wrapped with a schema;
- ``projection``, ``delivery``: each peer's run, and merlin's beside it (``forwarders``);
- ``groups``: the consumer groups a comparison made, deleted after it;
- ``comparison``: the rows of the comparison, with live rooms beside Centrifugo (``bench.live``).
"""

from bench.peers.comparison import peers

__all__ = ["peers"]
