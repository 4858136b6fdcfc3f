"""The layer every subsystem stands on: the compiled kernels of the best SIMD target
(``backend``), threads and build facts (``runtime``), the dtype table and argument checks
(``dtypes``, ``checks``), memory layouts and the ``out=`` rule (``layout``), the recycling of
outputs (``recycle``) and the communicator (``comm``). Nothing here imports ``cnorm.nn`` or
``cnorm.data``."""
