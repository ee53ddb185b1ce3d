"""Collection DAGs (``ls4_{collection}``), shard 6: see ``ls4_ops.operators.collection_dags``."""

# Airflow's DAG processor (in safe mode) only parses files that say both "airflow" and "dag".
from ls4_ops.operators.collection_dags import register_shard

register_shard(globals(), 6)
