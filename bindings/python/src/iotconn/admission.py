"""Admission: a connect budget shared by the clients of one process (iotconn_admission_t)."""

from __future__ import annotations

import ctypes
import weakref
from typing import Optional, Union

from . import _native
from .errors import ErrorCode, InvalidArgumentError

# The largest burst the header's uint32_t carries; ctypes would wrap a larger or negative one silently.
_MAX_BURST = 2**32 - 1


class Admission:
    """A budget of `per_second` connection attempts per second, at most `burst` at once, for the clients created
    with `admission=` it: every connection attempt of theirs (the first connect and each reconnect) takes a token
    and waits for one when there is none, so the process never asks the hub for more, however many of its clients
    lost their link together. For a process with many identities (a gateway, a simulator); set `per_second` a
    little under the hub's connect rate (IoT Hub S1: about 100 per second per unit).

        with iotconn.Admission(per_second=90) as budget:
            clients = [IoTHubDeviceClient.create_from_connection_string(cs, admission=budget) for cs in fleet]

    close() releases the native handle only: clients created with the budget keep sharing it until they are shut
    down, so it may be closed right after the clients are created. A client created with a closed one raises
    BadHandleError (the library's EBADHANDLE). A rate not above 0 or not finite, or a burst of 0, raises
    InvalidArgumentError (EINVAL) from the library.
    """

    def __init__(self, per_second: Union[int, float], burst: int = 1, *, library: Optional[str] = None) -> None:
        """library: path of libiotconn.so instead of the bundled one (or set IOTCONN_LIBRARY)."""
        if isinstance(per_second, bool) or not isinstance(per_second, (int, float)):
            raise TypeError(f"per_second must be an int or a float, not {type(per_second).__name__}")
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"burst must be an int, not {type(burst).__name__}")
        if not 0 <= burst <= _MAX_BURST:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"burst must be between 1 and {_MAX_BURST}, not {burst}")
        lib = _native.load_library(library)
        out = ctypes.c_void_p()
        lib.check(lib.admission_create(per_second, burst, ctypes.byref(out)))
        self._lib = lib
        # Kept after close: the library never reuses a handle, so a client given a closed budget gets its EBADHANDLE.
        self._handle = out.value or 0
        # Destroys the handle once, at close() or when the budget is collected; its clients keep sharing it.
        self._destroy = weakref.finalize(self, lib.admission_destroy, self._handle)

    def close(self) -> None:
        """Releases the native handle; the clients created with the budget keep sharing it. Idempotent."""
        rc = self._destroy()  # None after the first call
        if rc is not None:
            self._lib.check(rc)

    def __enter__(self) -> "Admission":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
