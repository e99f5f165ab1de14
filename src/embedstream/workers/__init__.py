"""Stage workers: embed, index, persist. Each is a batch handler run by the stream runtime."""
