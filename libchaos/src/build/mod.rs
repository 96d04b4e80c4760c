//! Domain builders (filled in below).
