"""gunicorn settings for the web process: `gunicorn -c config/gunicorn.py config.wsgi`.

Threaded workers (gthread): a connection that sends nothing is parked on the worker's poller
after a few seconds instead of holding the only thread of a sync worker, and the other threads
keep answering meanwhile, so idle or slow clients (browser preconnects) cannot stall requests.
Knobs come from the environment (README, Deployment).
"""

import os

bind = os.environ.get("REVERIE_WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("REVERIE_WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("REVERIE_WEB_THREADS", "4"))
# Keep-alive connections wait on the poller, not in a thread.
keepalive = int(os.environ.get("REVERIE_WEB_KEEPALIVE", "30"))
timeout = int(os.environ.get("REVERIE_WEB_TIMEOUT", "60"))
graceful_timeout = 30
max_requests = 5000
max_requests_jitter = 500
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("REVERIE_LOG_LEVEL", "INFO").lower()
forwarded_allow_ips = os.environ.get("REVERIE_WEB_FORWARDED_ALLOW_IPS", "127.0.0.1")
