"""A concurrent, realistic write workload that plays the bento_social application while splitter runs.

- :mod:`devtools.workload.driver`: ``Workload``, the threads, rate, retries and counts (the driver loop).
- :mod:`devtools.workload.mix`: the application's write mix: operation kinds, their weights, their functions.
- :mod:`devtools.workload.people`, :mod:`devtools.workload.posts`: what each operation writes.
- :mod:`devtools.workload.rows`: what the operations share (context, picking rows, generated values).

Never imported by production code. Importers name the module they need (no re-exports here).
"""
