//! # raftengine-conformance
//!
//! The shared suite every `raftengine` backend must pass.
//!
//! **Status:** not implemented yet; tracked by issue #5 (it grows together
//! with the first backend, issue #3).
