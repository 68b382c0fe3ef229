//! Receiving on a dedicated thread without paying a wake-up per event.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{Receiver, error::TryRecvError};

/// Receives the next value on a plain (non-runtime) thread: polls the
/// channel for up to `spin`, yielding the CPU between polls, then blocks.
///
/// Waking a thread that went to sleep costs tens of microseconds on a
/// virtual machine, and a replicated write crosses several such threads;
/// a value that arrives within `spin` is taken without that wake-up. The
/// poll uses only CPU no other thread wants (`yield_now` between tries),
/// at most `spin` per call. `Duration::ZERO` blocks at once. Returns `None`
/// when every sender is gone.
///
/// Must not be called on an async runtime's thread (it blocks).
///
/// ```
/// use std::time::Duration;
/// use raftengine_kit::idle_spin::blocking_recv_spinning;
///
/// let (tx, mut rx) = tokio::sync::mpsc::channel(4);
/// std::thread::spawn(move || tx.blocking_send(7u32));
/// assert_eq!(blocking_recv_spinning(&mut rx, Duration::from_micros(300)), Some(7));
/// assert_eq!(blocking_recv_spinning(&mut rx, Duration::from_micros(300)), None);
/// ```
pub fn blocking_recv_spinning<T>(rx: &mut Receiver<T>, spin: Duration) -> Option<T> {
    if !spin.is_zero() {
        let until = Instant::now() + spin;
        loop {
            match rx.try_recv() {
                Ok(value) => return Some(value),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::yield_now();
        }
    }
    rx.blocking_recv()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_value_is_still_received_after_the_spin() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let sender = std::thread::spawn(move || {
            // Long after the 100 µs spin: the receiver must block, not give up.
            std::thread::sleep(Duration::from_millis(20));
            tx.blocking_send(1u8)
        });
        assert_eq!(
            blocking_recv_spinning(&mut rx, Duration::from_micros(100)),
            Some(1)
        );
        assert!(sender.join().is_ok_and(|r| r.is_ok()));
    }

    #[test]
    fn queued_values_come_first_and_a_closed_channel_ends() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tx.try_send(1u8).unwrap();
        tx.try_send(2u8).unwrap();
        drop(tx);
        assert_eq!(blocking_recv_spinning(&mut rx, Duration::ZERO), Some(1));
        assert_eq!(
            blocking_recv_spinning(&mut rx, Duration::from_micros(50)),
            Some(2)
        );
        assert_eq!(
            blocking_recv_spinning(&mut rx, Duration::from_micros(50)),
            None
        );
    }
}
