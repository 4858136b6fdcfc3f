"""Type aliases of the annotations. cnorm checks dtypes at run time (bfloat16 is ml_dtypes'
type, outside NumPy's type hierarchy), so arrays are typed by shape of use, not by dtype."""
from typing import Any, Optional, Sequence, Tuple, Union

from numpy.typing import ArrayLike, DTypeLike, NDArray

Array = NDArray[Any]                  # an ndarray; its dtype is checked when it is used
OptArray = Optional[Array]            # a parameter that may be absent
Shape = Tuple[int, ...]
AxisLike = Union[int, Sequence[int], None]

__all__ = ["Array", "ArrayLike", "AxisLike", "DTypeLike", "OptArray", "Shape"]
