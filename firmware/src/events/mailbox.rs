//! A bounded queue between the pipeline's output thread and one link's
//! thread: pushing never blocks; when full, the oldest message goes (old
//! events matter less than new ones) and is counted.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What [`Mailbox::pop`] found.
pub enum Popped<T> {
    /// The oldest item.
    Item(T),
    /// Nothing came within the time.
    Empty,
    /// Closed and nothing left.
    Closed,
}

pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Mailbox<T> {
    /// A mailbox of at most `capacity` (at least 1) items.
    pub fn new(capacity: usize) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `item`; returns how many old items were dropped to make room.
    pub fn push(&self, item: T) -> u64 {
        let mut s = self.lock();
        let mut dropped = 0;
        while s.items.len() >= self.capacity {
            s.items.pop_front();
            dropped += 1;
        }
        s.items.push_back(item);
        drop(s);
        self.changed.notify_one();
        dropped
    }

    /// The oldest item, waiting up to `wait` for one.
    pub fn pop(&self, wait: Duration) -> Popped<T> {
        let mut s = self.lock();
        if s.items.is_empty() && !s.closed {
            s = self
                .changed
                .wait_timeout_while(s, wait, |s| s.items.is_empty() && !s.closed)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match s.items.pop_front() {
            Some(item) => Popped::Item(item),
            None if s.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Waits up to `wait` or until [`Mailbox::wake`] or [`Mailbox::close`].
    pub fn idle(&self, wait: Duration) {
        let s = self.lock();
        if !s.closed {
            let _ = self.changed.wait_timeout(s, wait);
        }
    }

    /// Wakes the link's thread (its connection state changed).
    pub fn wake(&self) {
        self.changed.notify_all();
    }

    /// No more items will come; the thread sends what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Whether [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mailbox_drops_the_oldest() {
        let m = Mailbox::new(2);
        assert_eq!(m.push(1), 0);
        assert_eq!(m.push(2), 0);
        assert_eq!(m.push(3), 1);
        assert!(matches!(m.pop(Duration::ZERO), Popped::Item(2)));
        assert!(matches!(m.pop(Duration::ZERO), Popped::Item(3)));
        assert!(matches!(m.pop(Duration::from_millis(1)), Popped::Empty));
        m.close();
        assert!(matches!(m.pop(Duration::from_secs(5)), Popped::Closed));
    }
}
