"""The HTTP surface, one Flask blueprint per concern: ``predictions`` (``/predict``,
``/features``), ``precomputed`` (``/precomputed``), ``operations`` (``/healthz``,
``/readyz``, ``/model``, ``/metrics``, ``/openapi.json``); how errors become answers is
``error_handlers``. A view finds the app's state with :func:`serving.state.serving_state`
and the model pinned for its request in ``g.model`` (``serving/app.py``)."""
