"""Lua for job bookkeeping. Every script is atomic, so an ack and the bookkeeping it
implies land together (the worker runs them in the MULTI/EXEC of its ack).

The scripts write no envelope of their own: every entry they add to a stream is an
envelope Python built (``Envelope.to_fields`` / ``Envelope.attributes``) and passed in.
The one thing only the Lua knows is when a job ends, so it writes the ``data`` of
``job.completed`` / ``job.failed`` (counts and failures) into the ``ce`` Python prepared.
"""

from __future__ import annotations

from embedstream.jobs.inflight import COUNT_LUA

# The start of a submit (``SUBMIT``, ``OPEN_JOB``), same KEYS and ARGV as theirs: the
# idempotency record (an existing one answers at once: 'existing', or 'conflict' for
# another request hash), then the job record; leaves ``n`` (the number of documents).
OPEN_RECORD = """
if KEYS[1] ~= KEYS[2] then
  local existing = redis.call('HMGET', KEYS[1], 'job_id', 'request_hash')
  if existing[1] then
    if existing[2] ~= ARGV[2] then return {existing[1], 'conflict'} end
    return {existing[1], 'existing'}
  end
  redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'request_hash', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'tenant', ARGV[5], 'state', 'queued',
           'documents', n, 'done', 0, 'failed', 0, 'created_at', ARGV[3])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'traceparent', ARGV[6]) end
"""

# Accept a request: idempotency key + job record + one XADD per command, each counted
# in flight for its document (embedstream.jobs.inflight).
# KEYS: idempotency key (the job key again when the request has none: every key is
#       declared, none is '', so the script runs on a Redis Cluster too), job key, job
#       documents key, ingest stream, in-flight counts, in-flight entries
# ARGV: job_id, request_hash, created_at, ttl_s, tenant, traceparent ('' when none),
#       n_docs, then per document (4 entries): document_id, kind, ce, data (the
#       envelope's two stream fields, ``Envelope.to_fields``)
# Returns {job_id, "new"|"existing"|"conflict"}
SUBMIT = (
    COUNT_LUA
    + OPEN_RECORD
    + """
for i = 8, 7 + n * 4, 4 do
  local doc = ARGV[i]
  local id = redis.call('XADD', KEYS[4], '*', 'ce', ARGV[i + 2], 'data', ARGV[i + 3])
  redis.call('HSET', KEYS[3], doc, ARGV[i + 1] .. '|' .. id)
  count_in_flight(KEYS[5], KEYS[6], id, ARGV[5] .. '/' .. doc)
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {ARGV[1], 'new'}
"""
)

# -- a submit over several partitions ---------------------------------------------------
# With partitions, a request's commands go to the streams of their documents' partitions:
# hash slots of their own on a cluster, which no single script can write together with
# the job record. A submit is then three idempotent steps (``JobTracker.submit``): OPEN
# the job (idempotency key, job record, its documents), ENQUEUE each partition's
# commands (once per job and partition, guarded by a marker), CLOSE the job (the
# documents' versions, ``enqueued``). The API answers 202 only after CLOSE; a request
# retried with the same Idempotency-Key after a crash between the steps finds the job
# open and finishes the enqueue without adding any command twice.

# KEYS: idempotency key (the job key again when none), job key, job documents key
# ARGV: job_id, request_hash, created_at, ttl_s, tenant, traceparent ('' when none),
#       n_docs, then per document: document_id, kind
# Returns {job_id, "new"|"existing"|"conflict"} (whether an existing job was enqueued
# completely, its record's ``enqueued``, is read apart: its key is not declared here)
OPEN_JOB = (
    OPEN_RECORD
    + """
for i = 8, 7 + n * 2, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1] .. '|')
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {ARGV[1], 'new'}
"""
)

# Add one partition's commands of a job, once: a second call (a retried request) finds
# the marker and answers the entry ids of the first.
# KEYS: marker (a hash document_id -> entry id), the partition's ingest stream, its
#       in-flight counts, its in-flight entries
# ARGV: ttl_s, tenant, n_docs, then per document (3 entries): document_id, ce, data
# Returns {document_id, entry id, ...}
ENQUEUE_PARTITION = (
    COUNT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 4, 3 + tonumber(ARGV[3]) * 3, 3 do
    local doc = ARGV[i]
    local id = redis.call('XADD', KEYS[2], '*', 'ce', ARGV[i + 1], 'data', ARGV[i + 2])
    redis.call('HSET', KEYS[1], doc, id)
    count_in_flight(KEYS[3], KEYS[4], id, ARGV[2] .. '/' .. doc)
  end
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: job key, job documents key; ARGV: then per document: document_id, "kind|entry id"
CLOSE_JOB = """
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'enqueued', '1')
return 1
"""

# Record that a stage is done (or failed) for one document of a job, once. When the
# document has every required stage (or any failure) it is finished; when every
# document is finished, exactly one job.completed or job.failed goes to the results
# stream. A finished delete also adds its document.deleted events (one per produced
# type version). A mark for another tenant than the job's is not counted.
# KEYS: job key, job documents key, stage key (this stage), document state key,
#       failures key, results stream, the deployment's job counts (a hash that never
#       expires: `completed`/`failed` counted once per job, read by the metrics), then the
#       stage keys of every required stage
# ARGV: document_id, status ("done"|"failed"), error, stage, now, ttl_s, tenant,
#       `ce` of job.completed, `ce` of job.failed,
#       then per document.deleted event (none for an upsert): `ce`, `data`
# Returns 1 when this call counted, 0 when it was already counted or the job is unknown.
MARK_STAGE = """
local doc, status = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[2], doc) == 0 then return 0 end
local job = redis.call('HMGET', KEYS[1], 'id', 'tenant')
local job_id = job[1]
if job[2] and job[2] ~= ARGV[7] then return 0 end
if redis.call('HSETNX', KEYS[3], doc, status) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[4], doc) == 1 then return 1 end
if status == 'failed' then
  redis.call('HSET', KEYS[4], doc, 'failed')
  redis.call('HSET', KEYS[5], doc, cjson.encode({stage = ARGV[4], error = ARGV[3]}))
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
else
  for k = 8, #KEYS do
    if redis.call('HGET', KEYS[k], doc) ~= 'done' then return 1 end
  end
  redis.call('HSET', KEYS[4], doc, 'done')
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  for e = 10, #ARGV, 2 do
    redis.call('XADD', KEYS[6], '*', 'ce', ARGV[e], 'data', ARGV[e + 1])
  end
end
local counts = redis.call('HMGET', KEYS[1], 'documents', 'done', 'failed')
local total, done, failed = tonumber(counts[1]), tonumber(counts[2]), tonumber(counts[3])
if done + failed < total then return 1 end
local ce, data
if failed == 0 then
  redis.call('HSET', KEYS[1], 'state', 'completed', 'finished_at', ARGV[5])
  redis.call('HINCRBY', KEYS[7], 'completed', 1)
  ce = ARGV[8]
  data = cjson.encode({job_id = job_id, status = 'completed', documents = total,
                       completed_at = ARGV[5]})
else
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[5])
  redis.call('HINCRBY', KEYS[7], 'failed', 1)
  ce = ARGV[9]
  local failures = {}
  local flat = redis.call('HGETALL', KEYS[5])
  for f = 1, #flat, 2 do
    local item = cjson.decode(flat[f + 1])
    failures[#failures + 1] = {document_id = flat[f], stage = item.stage, error = item.error}
  end
  data = cjson.encode({job_id = job_id, status = 'failed', documents = total,
                       failures = failures, failed_at = ARGV[5]})
end
redis.call('XADD', KEYS[6], '*', 'ce', ce, 'data', data)
for k = 1, #KEYS do
  if k ~= 6 and k ~= 7 then redis.call('EXPIRE', KEYS[k], ARGV[6]) end
end
return 1
"""
