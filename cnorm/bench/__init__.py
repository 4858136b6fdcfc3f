"""The benchmark report (``python -m cnorm.bench``, see ``report``), its cases and worker
process (``cases``, ``data_cases``) and the stream-copy probe it measures against
(``_stream``). The pytest-benchmark suite in the repository's ``bench/`` runs the same cases.
Nothing here is imported by ``import cnorm``."""
