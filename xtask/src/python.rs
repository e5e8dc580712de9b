//! The Python client's CI steps (filled in below).
