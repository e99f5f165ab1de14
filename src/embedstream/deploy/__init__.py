"""What the deployment files are generated from (``embedstream keda``)."""
