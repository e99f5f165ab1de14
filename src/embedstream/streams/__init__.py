"""The Redis Streams consumer runtime every stage and subscriber runs on: names, messages,
decoding, outcomes, consumer operations, one batch, the run loop."""
