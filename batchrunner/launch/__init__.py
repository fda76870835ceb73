"""Launch: starting a run in this process, with what its config names but the pipeline takes.

``run`` is the synchronous entry point of the library (``batchrunner.run``); ``simulated``
starts the built-in simulator for ``RunConfig.simulate`` and hands the pipeline its URL and
an authenticator holding the simulator's service-account key, so that the pipeline never
knows a simulator exists. The modules here are private: their public names are exported by
``batchrunner``. They may import the pipeline, every room below it and ``simulator``; only
``cli`` and ``batchrunner`` import them.
"""
