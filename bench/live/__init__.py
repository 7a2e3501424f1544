"""Live rooms: subscribers holding Server-Sent Events streams, merlin's read API beside Centrifugo.

- ``sse``: the event stream format, parsed as it arrives in pieces;
- ``accounting``: what a delivery tells (its latency from the send time in its body), each
  subscriber's order, and the figures and rows of a run;
- ``usage``: a server's CPU time and resident memory, its worker processes included (``/proc``);
- ``centrifugo``: the peer, built once from the Go module proxy, its config and its process;
- ``subscribers``, ``sender``: the load generators, each run as processes of their own;
- ``scenario``: the ``live`` scenario and the comparison's rows.
"""
