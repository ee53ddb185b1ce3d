"""ls4 core: pure functions on keys, files and connections (no Airflow imports)."""
