"""The pipeline's stages (embed, index, persist): each one ``Stage`` declaration, run by
``run_stage`` on the stream runtime (``embedstream.workers.stage``)."""
