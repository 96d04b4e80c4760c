//! In-memory hypervisor (filled in by the foundation work).
