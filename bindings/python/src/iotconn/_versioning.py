"""The package's version is the C header's IOTCONN_VERSION_STRING (include/iotconn.h), the one place the project
writes its version: setup.py copies it into the wheel's metadata and _version.py; a source checkout, which has no
_version.py, reads the header."""

import re
from pathlib import Path

SOURCE_TREE_HEADER = Path(__file__).resolve().parents[4] / "include" / "iotconn.h"


def read_header_version(header: Path = SOURCE_TREE_HEADER) -> str:
    match = re.search(r'^#define IOTCONN_VERSION_STRING "([0-9]+\.[0-9]+\.[0-9]+)"$', header.read_text("utf-8"), re.M)
    if match is None:
        raise RuntimeError(f"no IOTCONN_VERSION_STRING in {header}")
    return match.group(1)


def package_version() -> str:
    try:
        from ._version import VERSION  # written into the wheel by setup.py
    except ImportError:
        return read_header_version()
    return VERSION
