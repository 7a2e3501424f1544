"""How `merlin kafka stop` and `status` find the clusters `start --brokers N` left under var/kafka/."""

from __future__ import annotations

from pathlib import Path

from merlin.local.kafka import LocalKafkaCluster, _bases
from merlin.local.settings import LocalSettings


def test_ports_are_grouped_into_clusters_by_their_base() -> None:
    assert _bases([9092, 9094, 9096], 3) == [9092]
    assert _bases([9092, 9094, 9096, 19092, 19094, 19096], 3) == [9092, 19092]
    # A node whose state is gone does not split its cluster in two.
    assert _bases([9092, 9096], 3) == [9092]
    assert _bases([9092, 9094], 1) == [9092, 9094]


def test_a_cluster_whose_nodes_no_longer_run_is_not_found(tmp_path: Path) -> None:
    for port in (9092, 9094, 9096):
        node = tmp_path / "kafka" / "cluster-3" / str(port)
        node.mkdir(parents=True)
        # A pid that is not a Kafka process (this test's parent is not `kafka.Kafka`).
        (node / "broker.pid").write_text("1")
    (tmp_path / "kafka" / "cluster-x").mkdir()
    assert LocalKafkaCluster.found(LocalSettings(var_dir=tmp_path)) == []
