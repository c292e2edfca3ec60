"""The HTTP front end (FastAPI). Never imports torch, stylenet or worker: it talks to workers
through Redis/RQ and reads styles through model_store's torch-free catalog."""
