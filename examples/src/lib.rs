//! # raftengine-examples
//!
//! The replicated key-value service (`kv`) and the engine-comparison bench
//! (`bench`) land with issue #6.
