from tests.eventstore.pgcluster import pg_cluster, pg_url  # noqa: F401 - the fleet's log is a real server
