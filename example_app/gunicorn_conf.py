"""gunicorn settings for several workers with metrics (``CHATKIT_METRICS``)::

    PROMETHEUS_MULTIPROC_DIR=/run/chatkit-metrics \\
        gunicorn -c example_app/gunicorn_conf.py -w 4 wsgi:app

Each worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` (a
directory for this server only; set it for the whole server, before it
starts), and a scrape of ``/chatkit/metrics``, whichever worker answers it,
adds them up. The hooks empty the directory when the server starts and drop
a dead worker's live gauges. Without the variable each worker counts alone.
"""

from flask_chatkit.metrics import child_exit  # noqa: F401 - gunicorn's hook
from flask_chatkit.metrics import on_starting  # noqa: F401 - gunicorn's hook

worker_class = "gevent"
worker_connections = 10000
keepalive = 30
