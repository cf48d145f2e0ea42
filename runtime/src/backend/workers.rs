//! The tract backend's worker pool, each worker bound to a core of its own
//! when the pool has a worker for every CPU the process may run on.
//!
//! Between a camera's frames the workers sleep. After such an idle spell
//! the OS may wake two of them on one core and leave them sharing it for
//! several milliseconds before its load balancer moves one. On a 2-vCPU VM
//! (Xeon, 2026-12-07) int8 DLA-tiny at 2 threads took 17.2–18.7 ms a frame
//! paced at 15 fps and 20.8–21.1 ms at 5 fps with free workers, against
//! 13.9–14.0 and 14.1–14.3 ms bound; back to back both ran about 13 ms
//! (`dla-tools bench --fps`, docs/PERFORMANCE.md).
//!
//! Only when the workers fill the allowed CPUs ([`Pinning::Auto`]): with
//! fewer workers than cores the scheduler has room to spread them, and two
//! processes that each pinned to "their first cores" would share those
//! while the rest idled. [`Pinning::Off`] leaves every worker free.

use std::sync::Arc;

use tract_linalg::multithread::Executor;

/// Whether the tract backend binds its workers to cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pinning {
    /// One core per worker when there are exactly as many workers as CPUs
    /// the process may run on (the default: `--threads` left at all cores);
    /// free workers otherwise.
    #[default]
    Auto,
    /// The OS places and moves every worker as it likes.
    Off,
}

impl Pinning {
    /// [`Pinning::Auto`] when `pin` (the default of every switch), else
    /// [`Pinning::Off`]: what `--no-pin` and `pin_threads` turn into.
    pub fn when(pin: bool) -> Pinning {
        if pin {
            Pinning::Auto
        } else {
            Pinning::Off
        }
    }
}

/// A pool of `threads` workers (at least 2) named `dla-tract-N`, pinned as
/// `pinning` says; the CPUs they were bound to, in worker order (empty when
/// free).
pub(super) fn pool(
    threads: usize,
    pinning: Pinning,
) -> Result<(Executor, Vec<usize>), rayon::ThreadPoolBuildError> {
    let cores = match pinning {
        Pinning::Auto => allowed_cpus().and_then(|allowed| cores_for(threads, &allowed)),
        Pinning::Off => None,
    }
    .unwrap_or_default();
    let bind = cores.clone();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|n| format!("dla-tract-{n}"))
        .start_handler(move |worker| {
            if let Some(&cpu) = bind.get(worker) {
                if let Err(e) = pin_current_thread(cpu) {
                    log::warn!("cannot bind inference worker {worker} to CPU {cpu}: {e}");
                }
            }
        })
        .build()?;
    Ok((Executor::MultiThread(Arc::new(pool)), cores))
}

/// The core for each of `threads` workers: the allowed CPUs in order when
/// there are exactly as many; `None` (leave them free) otherwise.
fn cores_for(threads: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    (threads >= 2 && allowed.len() == threads).then(|| allowed.to_vec())
}

/// The CPUs this process may run on (its affinity mask), in order.
#[cfg(target_os = "linux")]
pub(super) fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
    }?;
    // SAFETY: `set` is an initialised cpu_set_t; CPU_ISSET reads bit `cpu`.
    let cpus = (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    Some(cpus.collect())
}

/// Affinity masks are Linux's; elsewhere the workers stay free.
#[cfg(not(target_os = "linux"))]
pub(super) fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

/// Binds the calling thread to `cpu` alone.
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes one bit
    // (`cpu` came from sched_getaffinity, below CPU_SETSIZE); thread 0 is
    // the caller.
    let done = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_only_when_they_fill_the_allowed_cpus() {
        assert_eq!(cores_for(2, &[0, 1]), Some(vec![0, 1]));
        assert_eq!(cores_for(4, &[2, 3, 6, 7]), Some(vec![2, 3, 6, 7]));
        assert_eq!(
            cores_for(2, &[0, 1, 2, 3]),
            None,
            "fewer workers than cores"
        );
        assert_eq!(cores_for(4, &[0, 1]), None, "more workers than cores");
        assert_eq!(cores_for(1, &[0]), None, "one thread has no pool");
    }

    /// The CPUs each worker of `executor` may run on, in worker order.
    #[cfg(target_os = "linux")]
    fn worker_affinities(executor: &Executor) -> Vec<Vec<usize>> {
        let Executor::MultiThread(pool) = executor else {
            panic!("not a pool")
        };
        pool.broadcast(|_| allowed_cpus().expect("affinity readable"))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pool_filling_the_cpus_binds_each_worker_to_its_own() {
        let allowed = allowed_cpus().expect("affinity readable");
        if allowed.len() < 2 {
            println!("SKIPPED: one CPU allowed, no pool to pin");
            return;
        }
        let (executor, cores) = pool(allowed.len(), Pinning::Auto).unwrap();
        assert_eq!(cores, allowed);
        let each: Vec<Vec<usize>> = allowed.iter().map(|&cpu| vec![cpu]).collect();
        assert_eq!(worker_affinities(&executor), each);

        let (executor, cores) = pool(allowed.len(), Pinning::Off).unwrap();
        assert!(cores.is_empty());
        assert!(worker_affinities(&executor)
            .iter()
            .all(|cpus| *cpus == allowed));
    }
}
