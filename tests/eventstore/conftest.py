from tests.eventstore.pgcluster import pg_cluster, pg_url  # noqa: F401 - fixtures of this folder
