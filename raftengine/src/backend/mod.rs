//! Building blocks for backend authors: pieces every durable backend needs
//! and that do not depend on a Raft implementation. Applications do not
//! need this module.

mod entry_cache;
mod idle_spin;
mod numeric_id;

pub use entry_cache::{CachedEntry, EntryCache};
pub use idle_spin::blocking_recv_spinning;
pub use numeric_id::{check_numeric_ids, numeric_id};
