//! The demo trainer (filled in below).
