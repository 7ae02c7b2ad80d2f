"""pounce_worker: a Gunicorn worker class for ASGI apps, one event loop per thread.

    gunicorn -k pounce_worker.ThreadWorker myapp:app
"""

from .worker import ThreadWorker

__all__ = ["ThreadWorker"]
__version__ = "0.1.0"
