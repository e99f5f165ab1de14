"""The job life cycle: accepting a request (job record, idempotency, the commands on the
ingest stream), each document's stage marks in the acks of the stages, the one
``job.completed`` / ``job.failed`` per job on the results stream, and the job's status."""
