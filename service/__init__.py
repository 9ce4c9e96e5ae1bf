"""The continual-learning daemon: gRPC API, state store, training jobs, auth, metrics and CLI client.

Run it with ``python -m service serve`` (console script ``mcild``); talk to it with ``mcil``. This
package knows nothing of tensor layouts beyond :mod:`service.codec`, which decodes request bytes into
the numpy arrays of :class:`model.samples.Sample`. Importing it is cheap: the model, torch and gRPC
are imported by the modules that need them.
"""
