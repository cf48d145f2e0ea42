//! The pool's other workers kept awake while a frame runs.
//!
//! A frame is some 160 short parallel loops ([`super::parallel`]) with
//! serial work between them. A rayon worker that finds nothing to do for a
//! few tens of microseconds goes to sleep, and waking it costs more than
//! many of those loops take: on a 2-vCPU VM (Xeon, 2026-12-07) a loop of
//! 8 x 25 µs ran in 102 µs back to back but in 175–190 µs after 50 µs or
//! more of serial work, the second worker joining some 80 µs late.
//! So while the frame runs, each other worker spins on a job that keeps
//! looking for work (`rayon::yield_now`), as ONNX Runtime's pool spins by
//! default, and now and then yields its core to the OS ([`YIELD_EVERY`]).
//! The spinning ends with the frame; between frames the workers sleep.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Empty polls between two `sched_yield`s of a spinner. After an idle
/// spell the OS may wake a worker on the very core the frame runs on; a
/// spinner that never gave its core away would then halve the frame's
/// share of it until the load balancer moved one of them (a 2-thread int8
/// frame paced at 5 fps took 39 ms instead of 13 on a 2-vCPU VM, slower
/// than 1 thread). Yielding lets the frame run there; on a core of its own
/// a yield returns at once.
const YIELD_EVERY: u32 = 64;

thread_local! {
    /// Whether this thread runs a spinner already (one is enough).
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the current worker of a rayon pool of `threads` while the
/// pool's other workers poll for work instead of sleeping; from outside a
/// pool, or with one thread, just runs `f`. Allocates nothing: the spinners
/// are `rayon::join` jobs, which live on this stack.
pub fn with_workers_awake<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let Some(owner) = rayon::current_thread_index() else {
        return f();
    };
    if threads < 2 {
        return f();
    }
    let running = AtomicBool::new(true);
    let (mut f, mut result) = (Some(f), None);
    let mut work = || result = f.take().map(|f| f());
    beside_spinners(threads - 1, &running, owner, &mut work);
    result.expect("the work ran")
}

/// Runs `work` here with `spinners` spinner jobs queued beside it (one
/// `join` each), and ends them when it returns, or panics: `join` waits
/// for its second job before it returns or unwinds.
fn beside_spinners(
    spinners: usize,
    running: &AtomicBool,
    owner: usize,
    work: &mut (dyn FnMut() + Send),
) {
    if spinners == 0 {
        let _stop = Stop(running);
        return work();
    }
    rayon::join(
        || beside_spinners(spinners - 1, running, owner, work),
        || spin_for_work(running, owner),
    );
}

/// Sets the flag that ends the spinners when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Runs pending jobs of the pool, or spins, until `running` is cleared.
/// Returns at once on the frame's own worker (which may pick this job up
/// while it waits inside a parallel loop: spinning there would wait for
/// itself) and on a worker that spins already.
fn spin_for_work(running: &AtomicBool, owner: usize) {
    if rayon::current_thread_index() == Some(owner) || SPINNING.with(Cell::get) {
        return;
    }
    SPINNING.with(|s| s.set(true));
    let mut idle = 0u32;
    while running.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle.is_multiple_of(YIELD_EVERY) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    SPINNING.with(|s| s.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::atomic::AtomicUsize;

    /// Parallel loops inside, nested ones included, run to completion on
    /// pools of 1 to 4 threads, and the call returns `f`'s value.
    #[test]
    fn loops_inside_finish_on_every_pool_size() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let sum = AtomicUsize::new(0);
            let r = pool.install(|| {
                with_workers_awake(threads, || {
                    for _ in 0..50 {
                        (0..16).into_par_iter().for_each(|i| {
                            (0..4).into_par_iter().for_each(|j| {
                                sum.fetch_add(i * 4 + j, Ordering::Relaxed);
                            })
                        });
                    }
                    7
                })
            });
            assert_eq!(r, 7);
            assert_eq!(sum.load(Ordering::Relaxed), 50 * (0..64).sum::<usize>());
        }
    }

    /// A panic inside stops the spinners and reaches the caller.
    #[test]
    fn a_panic_inside_ends_the_spinning() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_workers_awake(3, || -> usize { panic!("inside") }))
        }));
        assert!(result.is_err());
        // The pool still runs work afterwards.
        assert_eq!(
            pool.install(|| (0..100).into_par_iter().sum::<usize>()),
            4950
        );
    }

    /// Outside a pool `f` just runs.
    #[test]
    fn outside_a_pool_it_just_runs() {
        assert_eq!(with_workers_awake(4, || 3), 3);
    }
}
