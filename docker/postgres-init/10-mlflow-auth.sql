-- Run once by the postgres image on the first start of an empty data volume (compose mounts this
-- folder at /docker-entrypoint-initdb.d; on Kubernetes the ConfigMap mlflow-postgres-init is).
-- MLflow's basic-auth app keeps its users and permissions here, apart from the tracking data.
CREATE DATABASE mlflow_auth;
