//! Stream framing (filled in by the framing work).
