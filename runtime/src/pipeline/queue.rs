//! The bounded queue between two pipeline stages, with the drop policy
//! chosen on purpose: live sources let the newest frame win (a stale frame is
//! handed back to the producer to recycle and counted), files block the
//! producer so no frame is lost.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// What a full queue does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Drop the oldest queued item (returned to the caller).
    LatestWins,
    /// Wait until the consumer has taken one.
    Block,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer, multi-consumer queue with a close signal.
pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    capacity: usize,
    policy: Policy,
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `capacity` (at least 1) items.
    pub fn new(capacity: usize, policy: Policy) -> FrameQueue<T> {
        let capacity = capacity.max(1);
        FrameQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity + 1),
                closed: false,
            }),
            changed: Condvar::new(),
            capacity,
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A poisoned lock means a stage panicked; the queue's data is still
        // consistent (every operation completes before unlocking).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `item`. `Ok(Some(old))` hands back an item dropped to make room
    /// ([`Policy::LatestWins`]); `Err(item)` means the queue is closed.
    pub fn push(&self, item: T) -> Result<Option<T>, T> {
        let mut s = self.lock();
        let mut dropped = None;
        loop {
            if s.closed {
                return Err(item);
            }
            if s.items.len() < self.capacity {
                break;
            }
            match self.policy {
                Policy::LatestWins => {
                    dropped = s.items.pop_front();
                    break;
                }
                Policy::Block => {
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        s.items.push_back(item);
        drop(s);
        self.changed.notify_all();
        Ok(dropped)
    }

    /// Takes the oldest item, waiting for one; `None` once the queue is closed
    /// and empty.
    pub fn pop(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                drop(s);
                self.changed.notify_all();
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Closes the queue: pushes fail, pops drain what is left then end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Closes the queue and returns what was still in it.
    pub fn close_and_drain(&self) -> Vec<T> {
        let mut s = self.lock();
        s.closed = true;
        let rest = s.items.drain(..).collect();
        drop(s);
        self.changed.notify_all();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn latest_wins_hands_back_the_stale_item() {
        let q = FrameQueue::new(1, Policy::LatestWins);
        assert_eq!(q.push(1), Ok(None));
        assert_eq!(q.push(2), Ok(Some(1)));
        assert_eq!(q.push(3), Ok(Some(2)));
        assert_eq!(q.pop(), Some(3));
        q.close();
        assert_eq!(q.push(4), Err(4));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn block_loses_nothing_and_keeps_order() {
        let q = Arc::new(FrameQueue::new(2, Policy::Block));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    assert_eq!(q.push(i), Ok(None));
                }
                q.close();
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let got: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn close_wakes_a_blocked_producer_and_consumer() {
        let q = Arc::new(FrameQueue::new(1, Policy::Block));
        q.push(0).unwrap();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(1))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.close_and_drain(), vec![0]);
        assert_eq!(producer.join().unwrap(), Err(1));
        assert_eq!(q.pop(), None);
    }
}
