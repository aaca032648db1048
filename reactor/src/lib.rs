//! A single-threaded mio poll loop (see the reactor issue).
