"""What the benchmark scripts share, once: the machine's description (``machine``), the model
records and bodies (``records``), the apps in their variants (``apps``), ASGI without a network
(``asgi``), CPU and memory read from /proc (``procfs``), cores (``pinning``), servers on loopback
(``servers``), the store a run wrote (``store``), wrk (``load``), a worker's garbage
collections (``gcstats``), interleaved rounds and medians (``rounds``) and the printed figures
beside their targets and peers (``report``).

The scripts put ``benchmarks/`` on ``sys.path`` and import ``_lib.<module>``; tests import
``benchmarks._lib.<module>``. The modules import each other relatively, so both work.
"""
